-- Cheaper writes of materials (issue 3's import speed; bench/README.md, imports.py).

-- 1. The materials' references are checked once per statement instead of once per row.
-- A foreign key runs a query per inserted row (SELECT ... FOR KEY SHARE): 50,000 materials
-- created by an import cost two of them each, 15-20% of the import. The checks below do the
-- same per statement: the referenced rows are locked FOR KEY SHARE once per distinct value
-- (so a concurrent DELETE of a category waits for the writer's commit, as with the foreign
-- key), then a missing one raises foreign_key_violation. The referenced side keeps its
-- guarantees: a category or unit still referenced cannot be deleted, and a renamed unit code
-- follows into materials (ON UPDATE CASCADE before).
ALTER TABLE materials DROP CONSTRAINT IF EXISTS materials_category_id_fkey;
ALTER TABLE materials DROP CONSTRAINT IF EXISTS materials_unit_code_fkey;

CREATE OR REPLACE FUNCTION materials_check_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing record;
BEGIN
    PERFORM 1 FROM categories c
    WHERE c.id IN (SELECT DISTINCT n.category_id FROM new_rows n WHERE n.category_id IS NOT NULL)
    ORDER BY c.id FOR KEY SHARE;
    PERFORM 1 FROM units u WHERE u.code IN (SELECT DISTINCT n.unit_code FROM new_rows n)
    ORDER BY u.code FOR KEY SHARE;
    SELECT n.id, n.category_id, n.unit_code,
           NOT EXISTS (SELECT 1 FROM units u WHERE u.code = n.unit_code) AS bad_unit
    INTO missing
    FROM new_rows n
    WHERE (n.category_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM categories c WHERE c.id = n.category_id))
       OR NOT EXISTS (SELECT 1 FROM units u WHERE u.code = n.unit_code)
    LIMIT 1;
    IF FOUND THEN
        IF missing.bad_unit THEN
            RAISE EXCEPTION 'insert or update on table "materials" violates its reference to "units"'
                USING ERRCODE = 'foreign_key_violation', TABLE = 'materials', COLUMN = 'unit_code',
                      DETAIL = format('Key (unit_code)=(%s) is not present in table "units".', missing.unit_code);
        END IF;
        RAISE EXCEPTION 'insert or update on table "materials" violates its reference to "categories"'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'materials', COLUMN = 'category_id',
                  DETAIL = format('Key (category_id)=(%s) is not present in table "categories".', missing.category_id);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS materials_references_insert ON materials;
CREATE TRIGGER materials_references_insert AFTER INSERT ON materials
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION materials_check_references();

-- An update checks (and locks) only the references it changes, as a foreign key does: other
-- updates (names, prices, soft deletes) lock no category row.
CREATE OR REPLACE FUNCTION materials_check_changed_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing record;
BEGIN
    PERFORM 1 FROM categories c
    WHERE c.id IN (SELECT DISTINCT n.category_id FROM new_rows n JOIN old_rows o ON o.id = n.id
                   WHERE n.category_id IS NOT NULL AND n.category_id IS DISTINCT FROM o.category_id)
    ORDER BY c.id FOR KEY SHARE;
    PERFORM 1 FROM units u
    WHERE u.code IN (SELECT DISTINCT n.unit_code FROM new_rows n JOIN old_rows o ON o.id = n.id
                     WHERE n.unit_code IS DISTINCT FROM o.unit_code)
    ORDER BY u.code FOR KEY SHARE;
    SELECT n.id, n.category_id, n.unit_code,
           NOT EXISTS (SELECT 1 FROM units u WHERE u.code = n.unit_code) AS bad_unit
    INTO missing
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE (n.category_id IS NOT NULL AND n.category_id IS DISTINCT FROM o.category_id
           AND NOT EXISTS (SELECT 1 FROM categories c WHERE c.id = n.category_id))
       OR (n.unit_code IS DISTINCT FROM o.unit_code AND NOT EXISTS (SELECT 1 FROM units u WHERE u.code = n.unit_code))
    LIMIT 1;
    IF FOUND THEN
        IF missing.bad_unit THEN
            RAISE EXCEPTION 'insert or update on table "materials" violates its reference to "units"'
                USING ERRCODE = 'foreign_key_violation', TABLE = 'materials', COLUMN = 'unit_code',
                      DETAIL = format('Key (unit_code)=(%s) is not present in table "units".', missing.unit_code);
        END IF;
        RAISE EXCEPTION 'insert or update on table "materials" violates its reference to "categories"'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'materials', COLUMN = 'category_id',
                  DETAIL = format('Key (category_id)=(%s) is not present in table "categories".', missing.category_id);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS materials_references_update ON materials;
CREATE TRIGGER materials_references_update AFTER UPDATE ON materials
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION materials_check_changed_references();

-- A category or unit that materials (live or soft-deleted) refer to stays.
CREATE OR REPLACE FUNCTION materials_referenced_category() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    used bigint;
BEGIN
    SELECT o.id INTO used FROM old_rows o WHERE EXISTS (SELECT 1 FROM materials m WHERE m.category_id = o.id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'update or delete on table "categories" violates the reference from table "materials"'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'categories',
                  DETAIL = format('Key (id)=(%s) is still referenced from table "materials".', used);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS categories_referenced ON categories;
CREATE TRIGGER categories_referenced AFTER DELETE ON categories
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION materials_referenced_category();

CREATE OR REPLACE FUNCTION materials_referenced_unit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- ON UPDATE CASCADE, as the foreign key did (rare: a unit's code renamed).
        UPDATE materials SET unit_code = NEW.code WHERE unit_code = OLD.code;
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM materials m WHERE m.unit_code = OLD.code) THEN
        RAISE EXCEPTION 'update or delete on table "units" violates the reference from table "materials"'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'units',
                  DETAIL = format('Key (code)=(%s) is still referenced from table "materials".', OLD.code);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS units_referenced ON units;
CREATE TRIGGER units_referenced AFTER DELETE ON units
    FOR EACH ROW EXECUTE FUNCTION materials_referenced_unit();
DROP TRIGGER IF EXISTS units_code_renamed ON units;
CREATE TRIGGER units_code_renamed AFTER UPDATE OF code ON units
    FOR EACH ROW WHEN (OLD.code IS DISTINCT FROM NEW.code) EXECUTE FUNCTION materials_referenced_unit();

-- 2. One index on sku instead of two: the unique index on live SKUs uses text_pattern_ops,
-- which also serves equality (imports, writes, loaders) and the prefix searches
-- (`sku LIKE 'AB%'`, search.py's ~>=~ / ~<~ range) that materials_sku_prefix_idx served.
-- Those imply `sku IS NOT NULL`, so the partial index still applies; materials without a
-- SKU (most of what imports create) no longer enter an index on it.
CREATE UNIQUE INDEX IF NOT EXISTS materials_sku_live_key ON materials (sku text_pattern_ops)
    WHERE deleted_at IS NULL AND sku IS NOT NULL;
DROP INDEX IF EXISTS materials_sku_key;
DROP INDEX IF EXISTS materials_sku_prefix_idx;
