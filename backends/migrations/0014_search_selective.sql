-- Search's text side reads fewer documents on broad queries (bench/README.md, search.py):
-- documents that hold only some of the query's words are looked for through its selective
-- words, not through words that thousands of names hold ("x" of "50x200", "in" of "24 in");
-- every word with digits split from letters is a tier of its own; and the GIN indexes keep
-- short pending lists.

-- The lexemes of a search's words, as search_tsquery(query, false) holds them (the same
-- parser and dictionaries).
CREATE FUNCTION search_lexemes(query text) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN
    tsvector_to_array(to_tsvector('russian', query) || to_tsvector('russian', search_split(query)));

-- The documents worth ranking for some of the words of `queries`: those holding any of their
-- lexemes that `common` (lexemes held by many documents, `ndoc` each) does not list, or two of
-- the common ones held by at most `pair_limit` documents each ("under cabinet lighting" for
-- "binder cabinet lighting"); when there are neither, the least common lexeme alone. Lexemes
-- are quoted, so each stays one lexeme whatever it holds.
CREATE FUNCTION search_selective_tsquery(queries text[], common text[], ndoc real[], pair_limit real)
    RETURNS tsquery LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH lexemes AS (
        SELECT DISTINCT '''' || replace(replace(l.lexeme, '\', '\\'), '''', '''''') || '''' AS quoted, c.ndoc
        FROM unnest(queries) q(text)
        CROSS JOIN LATERAL unnest(search_lexemes(q.text)) l(lexeme)
        LEFT JOIN unnest(common, ndoc) c(lexeme, ndoc) ON c.lexeme = l.lexeme
    ),
    chosen AS (
        SELECT quoted FROM lexemes WHERE ndoc IS NULL
        UNION ALL
        SELECT a.quoted || ' & ' || b.quoted FROM lexemes a JOIN lexemes b ON a.quoted < b.quoted
        WHERE a.ndoc <= pair_limit AND b.ndoc <= pair_limit
    )
    SELECT coalesce(nullif(string_agg(quoted, ' | ' ORDER BY quoted), ''),
                    (SELECT quoted FROM lexemes ORDER BY ndoc, quoted LIMIT 1), '')::tsquery
    FROM chosen
$$;

-- The search's words with digits split from letters ("12мм" -> "12 & мм"), every word, for each
-- of `queries` that splitting changes; NULL when it changes none.
CREATE FUNCTION search_split_tsquery(queries text[]) RETURNS tsquery
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT string_agg(DISTINCT '(' || t::text || ')', ' | ' ORDER BY '(' || t::text || ')')::tsquery
    FROM unnest(queries) q(text)
    CROSS JOIN LATERAL plainto_tsquery('russian', search_split(q.text)) t
    WHERE search_split(q.text) <> lower(q.text) AND numnode(t) > 0
$$;

-- New entries of a GIN index wait in its pending list (up to gin_pending_list_limit, 4 MB by
-- default) until a vacuum merges them, and every search scans that list whole: after a text
-- rebuild of 100,000 documents it held 3,681 of them and cost the text side ~1.2 ms of
-- PostgreSQL CPU per search (5.4 ms against 7.0). A smaller list is merged by the writer
-- more often (the text indexer, off the request path); TextIndexer.rebuild merges it at once.
ALTER INDEX material_search_document_idx SET (gin_pending_list_limit = 256);
ALTER INDEX material_search_name_trgm_idx SET (gin_pending_list_limit = 256);
ALTER INDEX search_words_trgm_idx SET (gin_pending_list_limit = 256);
