-- Search: the text side's documents, popular queries for suggestions, and where each index
-- consumer of the event outbox has got to.

-- Tokens are split where digits meet letters ("12мм" -> "12мм 12 мм", "М500" -> "м500 м 500"),
-- so a query written either way finds the row; the unsplit token is kept for exact matches.
CREATE FUNCTION search_split(input text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN
    regexp_replace(regexp_replace(lower(input), '([[:digit:]])([[:alpha:]])', '\1 \2', 'g'),
                   '([[:alpha:]])([[:digit:]])', '\1 \2', 'g');

-- The searchable document of a material: name (weight A: stemmed; B: exact tokens and split
-- tokens), SKU (A, exact), description (D, stemmed). Stemming is 'russian', which stems
-- Cyrillic words with the Russian and Latin words with the English Snowball stemmer.
CREATE FUNCTION material_document(name text, sku text, description text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN
    setweight(to_tsvector('russian', name), 'A')
    || setweight(to_tsvector('simple', name || ' ' || search_split(name)), 'B')
    || setweight(to_tsvector('simple', coalesce(sku, '')), 'A')
    || setweight(to_tsvector('russian', left(coalesce(description, ''), 2000)), 'D');

-- Filled from materials by the text indexer (backends.search_index), driven by the outbox, so
-- writes and imports never pay for it; reads join materials, so a deleted material is never
-- returned even before its document is removed.
CREATE TABLE material_search (
    material_id bigint PRIMARY KEY,
    name_norm   text NOT NULL,       -- lower(name) with digits split from letters: trigram matching
    document    tsvector NOT NULL
);
CREATE INDEX material_search_document_idx ON material_search USING gin (document);
CREATE INDEX material_search_name_trgm_idx ON material_search USING gin (name_norm gin_trgm_ops);

-- Normalised queries people ran, counted: suggest() completes from these and material names.
CREATE TABLE search_queries (
    query     text PRIMARY KEY,
    hits      bigint NOT NULL DEFAULT 0,
    last_seen timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX search_queries_prefix_idx ON search_queries (query text_pattern_ops);
CREATE INDEX material_search_name_prefix_idx ON material_search (name_norm text_pattern_ops);

-- Each consumer of the outbox (the text indexer, the vector indexer of one collection) and the
-- last event it has applied.
CREATE TABLE index_cursors (
    consumer      text PRIMARY KEY,
    last_event_id bigint NOT NULL,
    detail        jsonb,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The tsquery of a search, parsed by the same parser as the documents (so "5-20мм" or
-- "pop-up" split the same way on both sides), stemmed by 'russian' (stop words drop out),
-- as written or with digits split from letters ("12мм" also finds "12 мм"): every word
-- (`conjunction`), or any of them.
CREATE FUNCTION search_tsquery(query text, conjunction boolean) RETURNS tsquery
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN
    CASE WHEN conjunction
        THEN plainto_tsquery('russian', query) || plainto_tsquery('russian', search_split(query))
        ELSE replace(plainto_tsquery('russian', query)::text, '&', '|')::tsquery
             || replace(plainto_tsquery('russian', search_split(query))::text, '&', '|')::tsquery
    END;
