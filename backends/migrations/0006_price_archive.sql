-- Archive storage for the prices of ARCHIVED price lists (backends.archive moves them).
--
-- prices_archive has the columns of prices and is partitioned the same way, by month of
-- valid_from, so that a monthly partition of prices holding only archived lists can be
-- detached and attached here as it is: no row is copied. Its partitions are named
-- prices_archive_YYYY_MM; a detached prices_YYYY_MM is renamed, which frees the name for
-- ensure_price_partitions() to create that month again for later imports.
--
-- No CHECK constraints: the rows were checked on their way into prices, and a partition
-- attached from prices brings its own (a table attached here may have more constraints
-- than its parent, never fewer). ids are kept, not generated: the history keeps its order.
CREATE TABLE prices_archive (
    id              bigint NOT NULL,
    material_id     bigint NOT NULL,
    supplier_id     bigint NOT NULL,
    price_list_id   bigint NOT NULL,
    unit_price      numeric NOT NULL,
    currency        char(3) NOT NULL,
    calc_unit_code  text,
    unit_calc_price numeric,
    buy_price       numeric,
    sale_price      numeric,
    stock           integer,
    price_date      date,
    valid_from      timestamptz NOT NULL,
    PRIMARY KEY (id, valid_from)
) PARTITION BY RANGE (valid_from);
-- The indexes of prices, so that ATTACH adopts a detached partition's indexes instead of
-- building new ones, and the history reads both tables the same way.
CREATE INDEX prices_archive_material_idx ON prices_archive (material_id, valid_from DESC, id DESC);
CREATE INDEX prices_archive_price_list_idx ON prices_archive (price_list_id, id);

-- Set when a list's price rows are in prices_archive. A list ARCHIVED before this
-- migration (status flipped, rows left in prices) has none, and the next archive run
-- moves its rows.
ALTER TABLE price_lists ADD COLUMN archived_at timestamptz;
CREATE INDEX price_lists_archive_pending_idx ON price_lists (id) WHERE status = 'ARCHIVED' AND archived_at IS NULL;

-- Every price ever recorded, current or archived: what priceHistory and PriceList.prices
-- read. A plain UNION ALL, which PostgreSQL flattens into one append over both tables'
-- partitions, so a keyset page still walks the (material_id, valid_from, id) indexes.
-- currentPrices and bestPrice read current_prices and never come here.
CREATE VIEW price_history AS
    SELECT id, material_id, supplier_id, price_list_id, unit_price, currency, calc_unit_code, unit_calc_price,
           buy_price, sale_price, stock, price_date, valid_from
      FROM prices
    UNION ALL
    SELECT id, material_id, supplier_id, price_list_id, unit_price, currency, calc_unit_code, unit_calc_price,
           buy_price, sale_price, stock, price_date, valid_from
      FROM prices_archive;

-- Creates the monthly partitions of prices_archive covering [lo, hi] that are missing.
-- CREATE TABLE ... PARTITION OF would lock prices_archive ACCESS EXCLUSIVE until the archive
-- transaction commits, stopping every priceHistory read while rows are moved; a table
-- created apart and attached takes SHARE UPDATE EXCLUSIVE, which readers do not wait for.
-- Its bounds CHECK spares the ATTACH a scan, as on the months of prices.
CREATE FUNCTION ensure_price_archive_partitions(lo timestamptz, hi timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m    timestamp := date_trunc('month', lo AT TIME ZONE 'UTC');
    last timestamp := date_trunc('month', hi AT TIME ZONE 'UTC');
    name text;
BEGIN
    WHILE m <= last LOOP
        name := 'prices_archive_' || to_char(m, 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE prices_archive INCLUDING DEFAULTS)', name);
            EXECUTE format(
                'ALTER TABLE %I ADD CONSTRAINT %I CHECK (valid_from >= %L AND valid_from < %L)',
                name, name || '_bounds', m AT TIME ZONE 'UTC', (m + interval '1 month') AT TIME ZONE 'UTC');
            EXECUTE format(
                'ALTER TABLE prices_archive ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                name, m AT TIME ZONE 'UTC', (m + interval '1 month') AT TIME ZONE 'UTC');
        END IF;
        m := m + interval '1 month';
    END LOOP;
END $$;

-- Partitions of prices now carry their bounds as a CHECK constraint as well: ATTACH then
-- sees that a detached month fits its archive partition without scanning it, while the
-- archive transaction holds prices' ACCESS EXCLUSIVE lock. Same function otherwise.
CREATE OR REPLACE FUNCTION ensure_price_partitions(lo timestamptz, hi timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- Month boundaries are taken in UTC whatever the session's TimeZone is.
    m    timestamp := date_trunc('month', lo AT TIME ZONE 'UTC');
    last timestamp := date_trunc('month', hi AT TIME ZONE 'UTC');
    name text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ensure_price_partitions'));
    WHILE m <= last LOOP
        name := 'prices_' || to_char(m, 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF prices FOR VALUES FROM (%L) TO (%L)',
                name, m AT TIME ZONE 'UTC', (m + interval '1 month') AT TIME ZONE 'UTC');
            EXECUTE format(
                'ALTER TABLE %I ADD CONSTRAINT %I CHECK (valid_from >= %L AND valid_from < %L)',
                name, name || '_bounds', m AT TIME ZONE 'UTC', (m + interval '1 month') AT TIME ZONE 'UTC');
        END IF;
        m := m + interval '1 month';
    END LOOP;
END $$;

-- The partitions that exist already get the same constraint, NOT VALID: validating here
-- would scan every month under ACCESS EXCLUSIVE, all held until this migration commits,
-- stopping every price read at start-up. backends.archive validates a month when it is
-- about to detach it (SHARE UPDATE EXCLUSIVE, which readers do not wait for).
DO $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname AS name,
               to_date(substr(c.relname, 8), 'YYYY_MM')::timestamp AS m
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'prices'::regclass AND c.relname ~ '^prices_\d{4}_\d{2}$'
    LOOP
        EXECUTE format(
            'ALTER TABLE %I ADD CONSTRAINT %I CHECK (valid_from >= %L AND valid_from < %L) NOT VALID',
            part.name, part.name || '_bounds', part.m AT TIME ZONE 'UTC',
            (part.m + interval '1 month') AT TIME ZONE 'UTC');
    END LOOP;
END $$;
