-- The words of material names with how many names hold them: the vocabulary that search
-- corrects misspelt query words against ("infared" -> "infrared", "цемнт" -> "цемент").
-- Kept by the text indexer (backends.search_index); counts only grow between rebuilds (a word
-- of a deleted or renamed material stays until the next `reindex`), which correction tolerates:
-- it searches for the corrected words in addition to the words as written, never instead.
CREATE TABLE search_words (
    word text PRIMARY KEY,
    ndoc integer NOT NULL
);
CREATE INDEX search_words_trgm_idx ON search_words USING gin (word gin_trgm_ops);
