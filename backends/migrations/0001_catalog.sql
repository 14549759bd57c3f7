-- Catalog foundation: units, categories, suppliers, materials, price lists, prices.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE units (
    code    text PRIMARY KEY,
    name    text NOT NULL,
    aliases text[] NOT NULL DEFAULT '{}'
);

-- Every spelling of a unit (lower-cased, including the code itself) -> its canonical code.
CREATE TABLE unit_aliases (
    alias     text PRIMARY KEY,
    unit_code text NOT NULL REFERENCES units (code) ON UPDATE CASCADE
);

CREATE TABLE categories (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id  bigint REFERENCES categories (id),
    name       text NOT NULL,
    -- ids from the root down to this category (itself included): subtree filters are
    -- one indexed containment test instead of a recursive walk.
    path       bigint[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX categories_parent_name_key ON categories (coalesce(parent_id, 0), lower(name));
CREATE INDEX categories_parent_idx ON categories (parent_id, name, id);
CREATE INDEX categories_path_idx ON categories USING gin (path);

CREATE TABLE suppliers (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX suppliers_name_key ON suppliers (lower(name));
CREATE INDEX suppliers_name_idx ON suppliers (name, id);

CREATE TABLE materials (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku         text,
    name        text NOT NULL CHECK (btrim(name) <> ''),
    description text,
    category_id bigint REFERENCES categories (id),
    unit_code   text NOT NULL REFERENCES units (code) ON UPDATE CASCADE,
    color       text,
    attributes  jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: price history keeps pointing at the row; reads skip it.
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX materials_sku_key ON materials (sku) WHERE deleted_at IS NULL AND sku IS NOT NULL;
-- Keyset orders (sort key, id); partial on live rows, which is what every read asks for.
CREATE INDEX materials_name_idx ON materials (name, id) WHERE deleted_at IS NULL;
CREATE INDEX materials_sku_order_idx ON materials ((coalesce(sku, '')), id) WHERE deleted_at IS NULL;
CREATE INDEX materials_created_idx ON materials (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX materials_updated_idx ON materials (updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX materials_category_name_idx ON materials (category_id, name, id) WHERE deleted_at IS NULL;
CREATE INDEX materials_sku_prefix_idx ON materials (sku text_pattern_ops) WHERE deleted_at IS NULL;

CREATE TABLE price_lists (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    supplier_id    bigint NOT NULL REFERENCES suppliers (id),
    version        integer NOT NULL CHECK (version > 0),
    status         text NOT NULL DEFAULT 'PROCESSING'
                   CHECK (status IN ('PROCESSING', 'ACTIVE', 'SUPERSEDED', 'FAILED', 'ARCHIVED')),
    filename       text,
    checksum       text NOT NULL,
    uploaded_at    timestamptz NOT NULL DEFAULT now(),
    effective_at   timestamptz NOT NULL DEFAULT now(),
    superseded_at  timestamptz,
    row_count      integer NOT NULL DEFAULT 0,
    rejected_count integer NOT NULL DEFAULT 0,
    UNIQUE (supplier_id, version),
    UNIQUE (supplier_id, checksum)
);
CREATE INDEX price_lists_supplier_idx ON price_lists (supplier_id, version DESC, id DESC);
CREATE INDEX price_lists_status_idx ON price_lists (status, superseded_at);

CREATE TABLE price_list_rejected_rows (
    price_list_id bigint NOT NULL REFERENCES price_lists (id) ON DELETE CASCADE,
    line          integer NOT NULL,
    "column"      text,
    message       text NOT NULL,
    raw           text,
    PRIMARY KEY (price_list_id, line, message)
);

-- Price history, partitioned by month of valid_from so old months can be detached and
-- archived. Partitions are created on demand by ensure_price_partitions().
CREATE TABLE prices (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    material_id     bigint NOT NULL,
    supplier_id     bigint NOT NULL,
    price_list_id   bigint NOT NULL,
    unit_price      numeric NOT NULL CHECK (unit_price >= 0),
    currency        char(3) NOT NULL DEFAULT 'RUB',
    calc_unit_code  text,
    unit_calc_price numeric CHECK (unit_calc_price >= 0),
    buy_price       numeric CHECK (buy_price >= 0),
    sale_price      numeric CHECK (sale_price >= 0),
    stock           integer,
    price_date      date,
    valid_from      timestamptz NOT NULL,
    PRIMARY KEY (id, valid_from)
) PARTITION BY RANGE (valid_from);
CREATE INDEX prices_material_idx ON prices (material_id, valid_from DESC, id DESC);
CREATE INDEX prices_price_list_idx ON prices (price_list_id, id);

-- The prices of each supplier's ACTIVE list, one row per (material, supplier): what
-- currentPrices, bestPrice and the price filters read without touching the history.
CREATE TABLE current_prices (
    material_id     bigint NOT NULL REFERENCES materials (id),
    supplier_id     bigint NOT NULL REFERENCES suppliers (id),
    price_id        bigint NOT NULL,
    price_list_id   bigint NOT NULL REFERENCES price_lists (id),
    unit_price      numeric NOT NULL,
    currency        char(3) NOT NULL,
    calc_unit_code  text,
    unit_calc_price numeric,
    buy_price       numeric,
    sale_price      numeric,
    stock           integer,
    price_date      date,
    valid_from      timestamptz NOT NULL,
    PRIMARY KEY (material_id, supplier_id)
);
CREATE INDEX current_prices_supplier_idx ON current_prices (supplier_id, material_id);
CREATE INDEX current_prices_best_idx ON current_prices (currency, unit_price, material_id);

-- Creates the monthly partitions of prices covering [lo, hi]; safe to call concurrently.
CREATE FUNCTION ensure_price_partitions(lo timestamptz, hi timestamptz) RETURNS void
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
        END IF;
        m := m + interval '1 month';
    END LOOP;
END $$;
