-- price.changed outbox events as typed rows (issue 3's import speed; bench/README.md, imports.py).
--
-- An import writes one price.changed event per price that changed: 100,000 for a 100k-row file.
-- As `events` rows each carried a jsonb payload (parsed from text: ~3.5 us), a second index
-- entry (topic, id) and a ~500-byte row: ~1.1 CPU s per 100k events, a quarter of the import.
-- The same facts as typed columns cost ~0.25 s (measured in one transaction, rolled back).
--
-- The ids come from the outbox's sequence (events' identity), so `events` and
-- `price_change_events` share one id space and one monotonic cursor; writers take the outbox
-- lock (backends.outbox) before inserting into either, so ids still become visible in id order.
-- Consumers read the view `outbox`: every event with the same columns as `events`, the payload
-- of a price change put together from its row exactly as the import used to write it.
CREATE TABLE price_change_events (
    id              bigint PRIMARY KEY DEFAULT nextval('events_id_seq'),
    material_id     bigint NOT NULL,
    supplier_id     bigint NOT NULL,
    price_list_id   bigint NOT NULL,
    currency        char(3) NOT NULL,
    old_unit_price  numeric,            -- null: the material had no price from this supplier
    category_path   bigint[],           -- the material's category and its ancestors at the change
    -- The new price row; price_id is null when the new list no longer carries the material.
    price_id        bigint,
    unit_price      numeric,
    calc_unit_code  text,
    unit_calc_price numeric,
    buy_price       numeric,
    sale_price      numeric,
    stock           integer,
    price_date      date,
    valid_from      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Instances wake at commit as for `events` (one notification per transaction).
CREATE TRIGGER price_change_events_notify AFTER INSERT ON price_change_events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- The payload as backends.imports wrote it before (numbers as strings, to_json() for text and
-- dates), as JSON text: `outbox` rows are `events` rows, whichever table holds them. The view
-- gives it as jsonb (`payload`, as `events` has it) and as text (`payload_text`: what the
-- outbox readers parse, without a round trip through jsonb: reading 1.9M events cost the
-- server 12.8 CPU s through jsonb, against ~3 s for `events`' own payload::text).
CREATE FUNCTION price_change_payload_text(e price_change_events) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN '{"materialId":' || e.material_id || ',"supplierId":' || e.supplier_id
           || ',"priceListId":' || e.price_list_id || ',"currency":' || to_json(e.currency)::text
           || ',"oldUnitPrice":' || coalesce('"' || e.old_unit_price || '"', 'null')
           || ',"newUnitPrice":' || coalesce('"' || e.unit_price || '"', 'null')
           || ',"categoryPath":' || coalesce('[' || array_to_string(e.category_path, ',') || ']', 'null')
           || ',"price":' || CASE WHEN e.price_id IS NULL THEN 'null' ELSE
                  '{"id":' || e.price_id || ',"unitPrice":"' || e.unit_price || '","currency":'
                  || to_json(e.currency)::text || ',"calcUnit":' || coalesce(to_json(e.calc_unit_code)::text, 'null')
                  || ',"unitCalcPrice":' || coalesce('"' || e.unit_calc_price || '"', 'null')
                  || ',"buyPrice":' || coalesce('"' || e.buy_price || '"', 'null')
                  || ',"salePrice":' || coalesce('"' || e.sale_price || '"', 'null')
                  || ',"stock":' || coalesce(e.stock::text, 'null')
                  || ',"priceDate":' || coalesce(to_json(e.price_date)::text, 'null')
                  || ',"validFrom":' || to_json(e.valid_from)::text || '}' END
           || '}';

-- Every committed event in one id order (a merge of both primary keys for `id > cursor ORDER BY id`).
CREATE VIEW outbox AS
    SELECT id, topic, entity_id, payload, created_at, payload::text AS payload_text FROM events
    UNION ALL
    SELECT e.id, 'price.changed'::text, e.material_id, price_change_payload_text(e)::jsonb, e.created_at,
           price_change_payload_text(e)
      FROM price_change_events e;
