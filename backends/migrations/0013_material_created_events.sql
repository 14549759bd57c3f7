-- material.created events of imports as typed rows, as 0011 did for their price changes
-- (bench/README.md, imports.py): an import that creates 50,000 materials wrote 50,000 `events`
-- rows with jsonb payloads (0.18-0.21 CPU s); the same rows typed cost 0.07-0.08 s. Mutations
-- (createMaterial, upsertMaterials) still write theirs to `events`.
CREATE TABLE material_created_events (
    id          bigint PRIMARY KEY DEFAULT nextval('events_id_seq'),  -- the outbox's one id sequence
    material_id bigint NOT NULL,
    sku         text,
    name        text NOT NULL,
    unit_code   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER material_created_events_notify AFTER INSERT ON material_created_events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- The payload as backends.imports wrote it to `events` before, as JSON text (see 0011).
CREATE FUNCTION material_created_payload_text(e material_created_events) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE  -- as to_json(): an IMMUTABLE one would not be inlined
    RETURN '{"materialId":' || e.material_id || ',"sku":' || coalesce(to_json(e.sku)::text, 'null')
           || ',"name":' || to_json(e.name)::text || ',"unit":' || to_json(e.unit_code)::text
           || ',"source":"import"}';

CREATE OR REPLACE VIEW outbox AS
    SELECT id, topic, entity_id, payload, created_at, payload::text AS payload_text FROM events
    UNION ALL
    SELECT e.id, 'price.changed'::text, e.material_id, price_change_payload_text(e)::jsonb, e.created_at,
           price_change_payload_text(e)
      FROM price_change_events e
    UNION ALL
    SELECT e.id, 'material.created'::text, e.material_id, material_created_payload_text(e)::jsonb, e.created_at,
           material_created_payload_text(e)
      FROM material_created_events e;
