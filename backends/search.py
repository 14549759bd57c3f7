"""Hybrid search: PostgreSQL full-text and Qdrant vectors, run concurrently and fused by rank.

The text side (one statement) ranks, in this order: an exact SKU, SKU prefixes, full-text
matches (`material_search.document`: names stemmed by the 'russian' configuration, which
stems Latin words with the English stemmer, plus exact and digit/letter-split tokens, SKU
and description), then trigram matches on the name for typos. The vector side embeds the
query (cached) and asks the vector index with the filters it can apply itself; PostgreSQL
then re-checks every filter and liveness for its hits, so a deleted material or a stale
payload never leaks into results.

HYBRID fuses the two sides by score (the default, `fusion="scores"`): every candidate either
side found gets its cosine similarity to the query (a text-only hit, which lies below the
vector side's depth, gets the cosine of the vector side's last hit) plus `rank_weight` times
its full-text rank plus `every_word_bonus` when the name holds every word. The vector side
reads the text rank of its own hits in the statement that re-checks them, so this costs no
round trip. `fusion="rrf"` is weighted reciprocal-rank fusion (`k`, `text_weight`,
`vector_weight`) instead: scale-free, for embedders whose cosines mean something else. The
defaults were chosen on the relevance dev set (bench/relevance.py, figures in bench/README.md).
Each side has a timeout; when one fails or is late, the other answers alone with
`degraded = True`. An exact SKU match always comes first.

Before both sides, the query is rewritten against the names' vocabulary (`rewrite_query`:
units as names spell them, run-together words split, split words joined, misspellings
corrected); the text side searches the rewrite besides the query as written, the vector side
embeds the corrected query and scores its hits' text for the rewrite too. In HYBRID the vector
side embeds the query while the text side runs, then searches once, for the query's vector
moved towards the stored vectors of the text side's first hits (`feedback_k`: pseudo-relevance
feedback), and re-checks only the hits the text side did not return.

The text side's cost is the documents it reads and ranks, so broad queries are bounded: every
word as written first, digits split from letters only when that found too few, at most
`every_cap` documents ranked; documents with some of the words are looked for through the
query's selective lexemes (or two common ones together), common meaning in more than
`common_lexeme` documents by PostgreSQL's statistics, at most `some_cap` ranked.
"""

from __future__ import annotations

import asyncio
import functools
import html
import itertools
import logging
import math
import re
import time
from array import array
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any, overload

import numpy as np

from backends.catalog import MaterialFilterSpec, _filter_conditions
from backends.embedder import _SPACES, Embedder, SharedQueryVectors, normalise_query
from backends.postgres import PostgresBackend
from backends.search_index import _PAYLOADS, passage_text
from backends.sql import SqlParams, like_prefix
from backends.vectors import VectorFilter, VectorIndex

log = logging.getLogger(__name__)

_WORDS = re.compile(r"[^\W_]+", re.UNICODE)
_SPLIT = re.compile(r"\d+|[^\W\d_]+", re.UNICODE)
MAX_QUERY_LENGTH = 500


class SearchUnavailable(RuntimeError):
    """Neither side of a search could answer."""


@dataclass(frozen=True)
class SearchTuning:
    fusion: str = "scores"  # or "rrf"
    rank_weight: float = 1.0  # scores: weight of the full-text rank beside the cosine
    every_word_bonus: float = 0.02  # scores: for a name that holds every word of the query
    k: float = 60.0  # rrf
    text_weight: float = 1.0  # rrf
    vector_weight: float = 1.0  # rrf
    depth: int = 300  # how deep the text side reads, and the deepest page the fused list serves
    vector_depth: int = 300  # how deep the vector side reads (300 found more than 200 on the dev set)
    # HYBRID: the vector side searches for the query moved towards the text side's first hits
    # (0: off). On the dev set R@50 0.735 -> 0.744 (k 3-7, weight 0.3-0.7 all 0.739-0.744).
    feedback_k: int = 5
    feedback_weight: float = 0.5
    # The text side's cost on broad queries (ranking is ~1 us a document, reading it as much):
    # documents ranked at most for all the words (per tier: as written, digits split) and for some
    # of them; a lexeme in more than `common_lexeme` documents does not look for some-words
    # matches alone, two such in at most `pair_limit` documents each do (0: every lexeme does).
    every_cap: int = 500
    some_cap: int = 2000
    common_lexeme: int = 1000
    pair_limit: int = 5000
    text_timeout: float = 2.0
    vector_timeout: float = 2.0


@dataclass(slots=True)
class Hit:
    material_id: int
    score: float
    text_score: float | None = None
    vector_score: float | None = None


class FusedHits(Sequence[Hit]):
    """The fused list, read-only and compact (four arrays, ~10 KB for 300 hits): Hit objects
    are made only for what is read (a page of 20), and one list can be shared (RecentResults)."""

    __slots__ = ("_ids", "_scores", "_text", "_vector")

    def __init__(self, ranked: Sequence[tuple[int, float]], text: dict[int, float], vector: dict[int, float]) -> None:
        nan = math.nan
        self._ids = array("q", [i for i, _ in ranked])
        self._scores = array("d", [s for _, s in ranked])
        self._text = array("d", [text.get(i, nan) for i, _ in ranked])
        self._vector = array("d", [vector.get(i, nan) for i, _ in ranked])

    def __len__(self) -> int:
        return len(self._ids)

    def _hit(self, k: int) -> Hit:
        t, v = self._text[k], self._vector[k]
        return Hit(self._ids[k], self._scores[k], None if t != t else t, None if v != v else v)  # NaN: none

    @overload
    def __getitem__(self, index: int) -> Hit: ...

    @overload
    def __getitem__(self, index: slice) -> list[Hit]: ...

    def __getitem__(self, index: int | slice) -> Hit | list[Hit]:
        if isinstance(index, slice):
            return [self._hit(k) for k in range(*index.indices(len(self._ids)))]
        if index < 0:
            index += len(self._ids)
        if not 0 <= index < len(self._ids):
            raise IndexError(index)
        return self._hit(index)

    def __iter__(self) -> Iterator[Hit]:
        return map(self._hit, range(len(self._ids)))


@dataclass
class SearchOutcome:
    hits: Sequence[Hit]
    mode: str
    degraded: bool
    took_ms: float
    terms: list[str] = field(default_factory=list)
    corrected: str | None = None  # the query with misspelt words corrected, when the text side also searched that


class RecentResults:
    """Fused result lists of recent searches, reused while the indexes have not changed.

    Key: the query as asked, mode, filter and depth. An entry is dropped by `invalidate()`,
    which the indexers call (backends.search_index) whenever they wrote to an index or saw
    its cursor moved by another instance; a result whose computation overlapped an
    invalidation is not kept (the epoch it started in is gone). A process that runs no
    indexer reads their cursors instead (`SearchService.follow_indexes`, at most every
    FOLLOW_INTERVAL s). `ttl` (s) bounds an entry's life whatever happens (a backstop).
    Degraded results are never kept, and a kept one is not served while the vector side
    looks unavailable (`SearchService._vectors_look_available`). Liveness is still checked per page: hits become
    materials through the request's loader, which drops deleted rows. About 12 KB an entry
    at depth 300; `size` 0 turns reuse off.
    """

    def __init__(self, size: int = 1000, ttl: float = 300.0) -> None:
        self.size, self.ttl = size, ttl
        self.epoch = 0
        self._entries: OrderedDict[Any, tuple[float, SearchOutcome]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> SearchOutcome | None:
        if not self.size:
            return None
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: Any, epoch: int, outcome: SearchOutcome) -> None:
        if not self.size or epoch != self.epoch:
            return
        self._entries[key] = (time.monotonic() + self.ttl, outcome)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def invalidate(self) -> None:
        self.epoch += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def query_terms(text: str) -> list[str]:
    """Words of the query, plus the parts of words where digits meet letters ("12мм" -> 12, мм)."""
    terms: list[str] = []
    for word in _WORDS.findall(normalise_query(text)):
        terms.append(word)
        parts = _SPLIT.findall(word)
        if len(parts) > 1:
            terms.extend(parts)
    seen: set[str] = set()
    return [t for t in terms if not (t in seen or seen.add(t))]


def highlight(name: str, terms: Sequence[str]) -> str:
    """`name`, HTML-escaped, with <mark> around each word that a query term matches (same stem-ish prefix)."""
    return _highlight(name, tuple(terms))


_ESCAPED = re.compile(r"[&<>\"']")


@functools.lru_cache(maxsize=8192)  # a page of a repeated search highlights the same names again
def _highlight(name: str, terms: tuple[str, ...]) -> str:
    exact, by_prefix = _term_index(terms)

    def matches(word: str) -> bool:
        w = word.lower()
        if w in exact:
            return True
        if len(w) < 3:
            return False
        # Every stem compared is at least 3 characters: only terms sharing the first 3 can match.
        for t in by_prefix.get(w[:3], ()):
            stem = max(3, min(len(t), len(w)) - 2)
            if w[:stem] == t[:stem] and abs(len(w) - len(t)) <= 4:
                return True
        return False

    if not _ESCAPED.search(name):  # nothing to escape (most names): words marked in place
        return _WORDS.sub(lambda m: f"<mark>{m.group(0)}</mark>" if matches(m.group(0)) else m.group(0), name)
    out: list[str] = []
    last = 0
    for m in _WORDS.finditer(name):
        out.append(html.escape(name[last:m.start()]))
        word = html.escape(m.group(0))
        out.append(f"<mark>{word}</mark>" if matches(m.group(0)) else word)
        last = m.end()
    out.append(html.escape(name[last:]))
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _term_index(terms: tuple[str, ...]) -> tuple[frozenset[str], dict[str, tuple[str, ...]]]:
    """The terms as a set, and the terms of three or more characters by their first three."""
    by_prefix: dict[str, list[str]] = {}
    for t in terms:
        if len(t) >= 3:
            by_prefix.setdefault(t[:3], []).append(t)
    return frozenset(terms), {k: tuple(v) for k, v in by_prefix.items()}


def prefix_successor(prefix: str) -> str:
    """The smallest string above every string starting with `prefix` (byte order, as text_pattern_ops)."""
    if not prefix:
        return "\U0010ffff"
    return prefix[:-1] + chr(min(ord(prefix[-1]) + 1, 0x10FFFF))


def rrf(sides: Sequence[tuple[list[tuple[int, float]], float]], k: float) -> dict[int, float]:
    """Weighted reciprocal-rank fusion of ranked (id, score) lists."""
    fused: dict[int, float] = {}
    for ranked, weight in sides:
        for rank, (material_id, _) in enumerate(ranked, start=1):
            fused[material_id] = fused.get(material_id, 0.0) + weight / (k + rank)
    return fused


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance with adjacent transpositions counted as one edit ("teh" -> "the")."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def best_correction(word: str, candidates: Sequence[tuple[str, int]]) -> str | None:
    """The vocabulary word `word` most likely misspells: fewest edits (one for words of up to
    five letters, two above), then the most common; None when no candidate is that close."""
    allowed = 1 if len(word) <= 5 else 2
    best: tuple[int, int, str] | None = None
    for candidate, ndoc in candidates:
        distance = edit_distance(word, candidate)
        if 0 < distance <= allowed and (best is None or (distance, -ndoc, candidate) < best):
            best = (distance, -ndoc, candidate)
    return best[2] if best else None


# Units and dimensions written the way product names write them ("24 inch" -> "24 in",
# "18v" -> "18 volt", "1 1/4" -> "1-1/4", "4by4" -> "4 x 4"). Only after a number, so a word
# like "foot" in "foot rest" stays; the query as written is searched as well, so a rewrite can
# only add matches.
_NUMBER_UNIT = re.compile(
    r"(\d)\s*-?\s*(inches|inchs|inch|in|\"|''|feet|foot|ft|'|pounds|pound|lbs|lb|gallons|gallon|gal"
    r"|ounces|ounce|oz|quarts|quart|qt|yards|yard|yd|volts|volt|v|watts|watt|w|amps|amp"
    r"|millimeters|millimetres|millimeter|millimetre|mm)(?![^\W_])",
    re.UNICODE,
)
_UNIT_FORMS = {
    "inches": "in", "inchs": "in", "inch": "in", "in": "in", '"': "in", "''": "in",
    "feet": "ft", "foot": "ft", "ft": "ft", "'": "ft", "pounds": "lb", "pound": "lb", "lbs": "lb", "lb": "lb",
    "gallons": "gal", "gallon": "gal", "gal": "gal", "ounces": "oz", "ounce": "oz", "oz": "oz",
    "quarts": "qt", "quart": "qt", "qt": "qt", "yards": "yd", "yard": "yd", "yd": "yd",
    "volts": "volt", "volt": "volt", "v": "volt", "watts": "watt", "watt": "watt", "w": "watt",
    "amps": "amp", "amp": "amp", "millimeters": "mm", "millimetres": "mm", "millimeter": "mm",
    "millimetre": "mm", "mm": "mm",
}
_BY = re.compile(r"(\d)\s*(?:by|x|\*)\s*(?=\d)")  # 4by4, 36 x42 -> "4 x 4", "36 x 42"
_MIXED_FRACTION = re.compile(r"(?<![\d/.])(\d+)\s+(\d+/\d+)")  # "1 1/4" -> "1-1/4", as names write it
_AREA = re.compile(r"\b(?:sq|square)\.?\s*(?:ft|feet|foot)\b\.?")
_VOLUME = re.compile(r"\b(?:cu|cubic)\.?\s*(?:ft|feet|foot)\b\.?")


def normalise_units(text: str) -> str:
    """`text` (normalised) with units and dimensions spelt as product names spell them."""
    text = _AREA.sub(" sq ft ", text)
    text = _VOLUME.sub(" cu ft ", text)
    text = _BY.sub(r"\1 x ", text)
    text = _MIXED_FRACTION.sub(r"\1-\2", text)
    text = _NUMBER_UNIT.sub(lambda m: f"{m.group(1)} {_UNIT_FORMS[m.group(2)]} ", text)
    return _SPACES.sub(" ", text).strip()


# One round trip for the vocabulary step: for each query word the vocabulary does not hold
# (or holds in at most $3 names), the words that share enough trigrams with it (a scan of the
# vocabulary: the costly part, so rare words get only one-edit candidates, from $2); and the
# counts of the exact words in $2 (the query's words, halves of long words, adjacent words
# joined, one-edit variants).
_VOCABULARY_SQL = """
SELECT w.word AS asked, c.word, c.ndoc
FROM unnest($1::text[]) AS w(word)
CROSS JOIN LATERAL (
    SELECT s.word, s.ndoc FROM search_words s
    WHERE s.word % w.word
      AND NOT EXISTS (SELECT 1 FROM search_words k WHERE k.word >= w.word AND k.word <= w.word AND k.ndoc > $3)
    ORDER BY similarity(s.word, w.word) DESC, s.ndoc DESC LIMIT 12
) c
UNION ALL
SELECT NULL, s.word, s.ndoc FROM unnest($2::text[]) AS e(word)
CROSS JOIN LATERAL (SELECT s.word, s.ndoc FROM search_words s WHERE s.word >= e.word AND s.word <= e.word) s
"""
# (Exact words are looked up as a range, `>= AND <=`: for `=` the planner takes the trigram
# index, which is slow for short words like "te" - 10-25 ms a word instead of 0.05.)
CORRECTABLE = re.compile(r"[^\W\d_]{4,}", re.UNICODE)  # words of letters only, four or more
_LETTER_WORDS = re.compile(r"[^\W\d_]+", re.UNICODE)
RARE_WORD = 2  # a word in at most this many names may be a misspelling too ("guage" beside "gauge")
RARE_RATIO = 20  # ... corrected to a word at least this many times as common
SPLIT_PART = 3  # the shortest half of a split compound ("firepit" -> "fire pit")


@dataclass(frozen=True)
class QueryRewrite:
    corrected: str | None  # the query with misspelt or run-together words mended; None if none were
    searched: str | None  # what the text side searches besides the query as written (units spelt as names spell them)


def _one_edit(word: str) -> set[str]:
    """`word` with two adjacent letters swapped or one letter left out: the commonest typos."""
    swapped = {word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(len(word) - 1)}
    return (swapped | {word[:i] + word[i + 1:] for i in range(len(word))}) - {word}


def _halves(word: str) -> list[tuple[str, str]]:
    return [(word[:i], word[i:]) for i in range(SPLIT_PART, len(word) - SPLIT_PART + 1)]


_ENDINGS = ("s", "es", "d", "ed", "ing")


def _inflection(word: str, other: str) -> bool:
    """Whether one word is the other with an English ending added: "hoods", "hood"."""
    short, long_ = sorted((word, other), key=len)
    return len(short) >= 3 and long_.startswith(short) and long_[len(short):] in _ENDINGS


def mended_words(words: Sequence[str], counts: dict[str, int],
                 candidates: dict[str, list[tuple[str, int]]]) -> dict[str, str]:
    """For each of `words` that the vocabulary (`counts`: word -> names holding it) lacks or holds
    rarely, what to search instead: two common words it runs together ("firepit" -> "fire pit"),
    else its likely spelling ("infared" -> "infrared")."""
    out: dict[str, str] = {}
    for word in words:
        own = counts.get(word, 0)
        floor = RARE_RATIO * max(own, 1)
        split = max(((min(counts.get(a, 0), counts.get(b, 0)), a, b) for a, b in _halves(word)), default=None)
        if split is not None and split[0] >= floor:  # both words far commoner than the two run together
            out[word] = f"{split[1]} {split[2]}"
            continue
        if own > RARE_WORD:
            continue
        near = candidates.get(word, ())
        if any(_inflection(word, c) for c, _ in near):
            continue  # the stemmer finds "hood" for "hoods" already
        if own:  # a rare word: one edit from a far more common one ("guage" -> "gauge")
            near = [(c, n) for c, n in near if n >= floor and edit_distance(word, c) == 1]
        if fix := best_correction(word, near):
            out[word] = fix
    return out


def apply_mending(text: str, replaced: dict[str, str], counts: dict[str, int]) -> str:
    """`text` with each two adjacent words that names hold as one word joined ("closet maid" ->
    "closetmaid"), then the words in `replaced` replaced."""
    words = text.split(" ")
    out: list[str] = []
    i = 0
    while i < len(words):
        joined = words[i] + words[i + 1] if i + 1 < len(words) else ""
        if joined.isalpha() and counts.get(joined, 0) > RARE_WORD:
            out.append(joined)
            i += 2
        else:
            out.append(words[i])
            i += 1
    return _LETTER_WORDS.sub(lambda m: replaced.get(m.group(0), m.group(0)), " ".join(out))


async def rewrite_query(conn: Any, query: str) -> QueryRewrite:
    """The query's words checked against the names' vocabulary (one round trip; none for a query
    with no word of four letters or more) and its units spelt as names spell them."""
    normalised = normalise_query(query)
    united = normalise_units(normalised)
    words = list(dict.fromkeys(CORRECTABLE.findall(united)))[:8]
    if not words:
        return QueryRewrite(corrected=None, searched=united if united != normalised else None)
    letter_words = _LETTER_WORDS.findall(united)
    exact = set(letter_words)
    edits = {w: _one_edit(w) for w in words}
    for w in words:
        exact.update(part for pair in _halves(w) for part in pair)
        exact.update(edits[w])
    exact.update(a + b for a, b in itertools.pairwise(letter_words))
    counts: dict[str, int] = {}
    candidates: dict[str, list[tuple[str, int]]] = {}
    for r in await conn.fetch(_VOCABULARY_SQL, words, sorted(exact), 0):  # trigrams for unknown words only
        if r["asked"] is None:
            counts[r["word"]] = r["ndoc"]
        else:
            candidates.setdefault(r["asked"], []).append((r["word"], r["ndoc"]))
    for w in words:  # trigrams miss these for short words ("guage" and "gauge" share two of ten)
        known = {c for c, _ in candidates.get(w, ())}
        candidates.setdefault(w, []).extend((e, counts[e]) for e in edits[w] if e in counts and e not in known)
    replaced = mended_words(words, counts, candidates)
    searched = normalise_units(apply_mending(united, replaced, counts))
    # Shown to the user: the words mended, the units as written.
    corrected = apply_mending(normalised, replaced, counts)
    return QueryRewrite(corrected=corrected if corrected != normalised else None,
                        searched=searched if searched != normalised else None)


async def corrected_query(conn: Any, query: str, known: set[str] | None = None) -> str | None:
    """`query` (normalised) with each word that no material name holds replaced by its likely
    spelling ("infared grills" -> "infrared grills", "цемнт" -> "цемент"); None when nothing
    was replaced."""
    return (await rewrite_query(conn, query)).corrected


def embedded_text(query: str, rewrite: QueryRewrite | None) -> str:
    """What the vector side embeds: the query with its misspelt words corrected, when they
    were ("swffer mop" -> "swiffer mop": the model knows the word, not the typo). On the dev
    set HYBRID R@50 0.740 -> 0.743, nDCG'@10 0.826 -> 0.829 (exact vectors)."""
    return rewrite.corrected if rewrite is not None and rewrite.corrected else query


SKU_EXACT, SKU_PREFIX = 1000.0, 500.0  # the text side's scores of SKU matches (see _TEXT_SQL)


def fuse_scores(text: Sequence[tuple[int, float]], vector: Sequence[tuple[int, float]],
                vector_text: dict[int, float], rank_weight: float, every_word_bonus: float) -> dict[int, float]:
    """Score fusion: cosine (the vector side's last cosine for a hit it did not reach) plus
    `rank_weight` x full-text rank, plus `every_word_bonus` when every word matched.

    Text scores are the text side's (1 + rank with every word, rank with some words, a small
    trigram similarity for typos; SKU matches above), else what the vector side's re-check
    read for its own hits."""
    cosines = dict(vector)
    floor = vector[-1][1] if vector else 0.0
    scores = {**vector_text, **dict(text)}
    fused: dict[int, float] = {}
    for material_id in scores.keys() | cosines.keys():
        t = scores.get(material_id, 0.0)
        rank = 1.0 if t >= SKU_PREFIX else t % 1.0  # an SKU match counts as the best text match
        fused[material_id] = (cosines.get(material_id, floor) + rank_weight * rank
                              + (every_word_bonus if t >= 1.0 else 0.0))
    return fused


# {src}: `material_search s` alone when the search has no filter (liveness is checked when the
# hits become materials), else joined to `materials m` for the filter's conditions.
_TEXT_SQL = """
WITH q AS (SELECT {exact} AS exact, {every} AS every, {any} AS any),
-- Only parsed when their tier is read.
split_q AS (SELECT {split} AS split),
some_q AS (SELECT {some} AS some),
exact_words AS MATERIALIZED (
    -- Every word, as written (or as rewritten).
    SELECT s.material_id AS id, 1.0 + least(ts_rank('{{0.05, 0.2, 0.5, 1.0}}', s.document, q.any, 1), 0.999)::float8 AS score
    FROM q, (
        -- Ranking is the cost of a search (~1 us a document, as much again to read it): an
        -- unspecific query ranks the first {every_cap} documents it matches, not all of them.
        SELECT s.material_id, s.document FROM q, {src} WHERE s.document @@ q.exact AND {where} LIMIT {every_cap}
    ) s
    ORDER BY 2 DESC, 1 LIMIT {limit}
),
split_words AS MATERIALIZED (
    -- Every word with digits split from letters ("12мм" also finds "12 мм"), only read when
    -- too few matched as written: split words are common ("x" and "мм" of "300x300мм").
    SELECT s.material_id AS id, 1.0 + least(ts_rank('{{0.05, 0.2, 0.5, 1.0}}', s.document, q.any, 1), 0.999)::float8 AS score
    FROM q, (
        SELECT s.material_id, s.document FROM q, split_q, {src}
        WHERE (SELECT count(*) FROM exact_words) < {limit} AND split_q.split IS NOT NULL
          AND s.document @@ split_q.split AND NOT s.document @@ q.exact AND {where}
        LIMIT {every_cap}
    ) s
    ORDER BY 2 DESC, 1 LIMIT {limit}
),
some_words AS MATERIALIZED (
    -- Documents with some of the words, only read when too few have all of them; looked for
    -- through the query's selective words ({some}: see SearchService.common_lexemes), ranked
    -- for all of them.
    SELECT s.material_id AS id, least(ts_rank('{{0.05, 0.2, 0.5, 1.0}}', s.document, q.any, 1), 0.999)::float8 AS score
    FROM q, (
        SELECT s.material_id, s.document FROM q, some_q, {src}
        WHERE (SELECT count(*) FROM exact_words) + (SELECT count(*) FROM split_words) < {limit}
          AND s.document @@ some_q.some AND NOT s.document @@ q.every AND {where}
        LIMIT {cap}
    ) s
    ORDER BY 2 DESC, 1 LIMIT {limit}
)
SELECT id, max(score) AS score, min(branch) AS branch FROM (
    (SELECT m.id, 1000.0::float8 AS score, 0 AS branch FROM materials m
     WHERE m.sku = {raw} AND m.deleted_at IS NULL AND {where})
    UNION ALL
    (SELECT m.id, 500.0::float8, 1 FROM materials m
     WHERE m.sku ~>=~ {prefix_low} AND m.sku ~<~ {prefix_high} AND m.deleted_at IS NULL AND {where}
     ORDER BY m.sku LIMIT {limit})
    UNION ALL
    SELECT id, score, 2 FROM exact_words
    UNION ALL
    SELECT id, score, 2 FROM split_words
    UNION ALL
    SELECT id, score, 2 FROM some_words
) hits GROUP BY id ORDER BY min(branch), max(score) DESC, id LIMIT {limit}
"""

# The text side's score of one document (`s.document`) for query text {q}, as in _TEXT_SQL:
# `_text_score_from` parses the query (as written, and as rewritten) once: OFFSET 0 keeps the planner from pulling the
# subquery up, which under a generic plan parsed it again for every row (4.4 ms -> 1.5 ms
# for 300 rows).
def _text_score_from(variants: Sequence[str]) -> str:
    every = " || ".join(f"search_tsquery({v}, true)" for v in variants)
    any_ = " || ".join(f"search_tsquery({v}, false)" for v in variants)
    return f"(SELECT {every} AS every, {any_} AS any OFFSET 0) q"
_TEXT_SCORE = ("(CASE WHEN s.document @@ q.every THEN 1.0 ELSE 0.0 END"
               " + least(ts_rank('{0.05, 0.2, 0.5, 1.0}', s.document, q.any, 1), 0.999))")

# The lexemes of the documents in more than $1 of them (estimated: the share PostgreSQL's
# statistics give the most common elements of the column, times the table's rows).
_COMMON_SQL = """
SELECT e.lexeme, round(e.freq * c.reltuples)::bigint AS ndoc
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_stats st ON st.schemaname = n.nspname AND st.tablename = c.relname AND st.attname = 'document'
CROSS JOIN LATERAL unnest(st.most_common_elems::text::text[], st.most_common_elem_freqs) e(lexeme, freq)
WHERE c.oid = 'material_search'::regclass AND e.lexeme !~ '[[:space:]]' AND e.freq * c.reltuples > $1
"""

# Typos, when the words found little: trigram similarity of the whole query to names. Planned
# for its value (a generic plan cannot use the trigram index for an unknown pattern).
_TYPO_SQL = """
SELECT s.material_id AS id, (word_similarity({raw_lower}, s.name_norm) * 0.01)::float8 AS score
FROM {src}
WHERE {raw_lower} <% s.name_norm AND {where}
ORDER BY {raw_lower} <<-> s.name_norm, 1 LIMIT {limit}
"""
FEW_WORD_HITS = 20
FOLLOW_INTERVAL = 0.5  # s between two reads of the index cursors (SearchService.follow_indexes)
COMMON_REFRESH = 60.0  # s between two reads of the common lexemes (SearchService.common_lexemes)


async def fetch_with_custom_plan(conn: Any, sql: str, args: Sequence[Any]) -> list[Any]:
    """Runs `sql` planned for its actual values.

    The pool plans every statement once (generic plans, backends.postgres); for search that
    plan is bad: with the pattern unknown, trigram and prefix conditions cannot use their
    indexes and became sequential scans (250 ms instead of 5 ms at 40k materials). A
    transaction-local setting costs one round trip more (BEGIN and SET go together).
    """
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        return await conn.fetch(sql, *args)


class SearchService:
    """The search API's engine: text and vector sides, fusion, suggestions, matching, neighbours."""

    def __init__(self, pg: PostgresBackend, embedder: Embedder | None, index: VectorIndex | None,
                 tuning: SearchTuning | None = None, results: RecentResults | None = None) -> None:
        self.pg, self.embedder, self.index = pg, embedder, index
        self.tuning = tuning or SearchTuning()
        self.results = results if results is not None else RecentResults()
        # Set where no indexer runs in this process: reads the indexes' cursors (at most every
        # FOLLOW_INTERVAL s, on a search) so reused results follow index changes made elsewhere.
        self.follow_indexes: Callable[[], Awaitable[None]] | None = None
        self._next_follow = 0.0
        self.popular: Counter[str] = Counter()
        self._common = ("", "")
        self._common_until = -1e9
        self.shared_vectors: SharedQueryVectors | None = None  # query vectors in Redis (set by the server)
        self.vectors_open = False
        self._open_attempt = -1e9
        self._open_lock = asyncio.Lock()

    async def open_vectors(self, *, retry_after: float = 5.0) -> bool:
        """Opens the vector store if it is not open; a failed attempt is retried at most every `retry_after` s.

        A store that was unreachable at start-up (a Qdrant server down, a bad URL) is picked
        up again by the next search once it answers: nothing has to be restarted.
        """
        if self.vectors_open:
            return True
        if self.index is None or self.embedder is None:
            return False
        async with self._open_lock:
            if self.vectors_open or time.monotonic() - self._open_attempt < retry_after:
                return self.vectors_open
            self._open_attempt = time.monotonic()
            try:
                await self.index.open(self.embedder.model_id, self.embedder.dim)
            except Exception as exc:  # reported; the text side answers meanwhile
                log.warning("vector store unavailable: %s", exc)
                return False
            self.vectors_open = True
            return True

    def _vectors_look_available(self) -> bool:
        """Whether the vector side would be tried now: open store, no open circuit. A reused
        result stands for a search of both sides, so it is not served while this is False:
        the search runs and says `degraded` (and its failures open the circuit)."""
        if self.index is None or self.embedder is None or not self.vectors_open:
            return False
        for guarded in (self.index, self.embedder):
            breaker = getattr(guarded, "breaker", None)
            if breaker is not None and not breaker.allows_calls:
                return False
        return bool(getattr(getattr(self.index, "inner", self.index), "is_open", True))

    # -- the two sides ------------------------------------------------------------------

    async def common_lexemes(self, conn: Any) -> tuple[str, str]:
        """The lexemes of the text documents held by more than `common_lexeme` documents, and
        how many each, space-separated (lexemes hold no spaces; one string is cheaper to send
        than an array of hundreds): estimates from PostgreSQL's statistics of
        `material_search.document`, read at most every COMMON_REFRESH s; none before the table
        was first analysed."""
        if not self.tuning.common_lexeme:
            return "", ""
        if time.monotonic() >= self._common_until:
            rows = await conn.fetch(_COMMON_SQL, float(self.tuning.common_lexeme))
            self._common = (" ".join(r["lexeme"] for r in rows), " ".join(str(r["ndoc"]) for r in rows))
            self._common_until = time.monotonic() + COMMON_REFRESH
        return self._common

    async def rewrite(self, query: str) -> QueryRewrite:
        """The query checked against the names' vocabulary (see `rewrite_query`)."""
        if not query.strip():
            return QueryRewrite(None, None)
        async with self.pg.pool.acquire() as conn:
            return await rewrite_query(conn, query.strip())

    async def text_side(self, query: str, spec: MaterialFilterSpec, limit: int,
                        rewrite: QueryRewrite | None = None) -> tuple[list[tuple[int, float]], str | None]:
        """The text side's hits, and the query with misspelt words corrected (None when none were).
        `rewrite`: the query's rewrite when the caller has it already."""
        raw = query.strip()
        if not raw:
            return [], None
        tuning = self.tuning
        filtered = spec != MaterialFilterSpec()
        src = "material_search s JOIN materials m ON m.id = s.material_id" if filtered else "material_search s"
        async with self.pg.pool.acquire() as conn:
            if rewrite is None:
                rewrite = await rewrite_query(conn, raw)
            corrected = rewrite.corrected
            params = SqlParams()
            asked = params.add(raw)
            # The words as written or as rewritten: a rewrite adds matches, never removes any.
            variants = [asked] + ([params.add(rewrite.searched)] if rewrite.searched else [])
            every = " || ".join(f"search_tsquery({v}, true)" for v in variants)
            any_ = " || ".join(f"search_tsquery({v}, false)" for v in variants)
            # The SKU branches always read `materials m`; the word branches only with a filter.
            where = " AND ".join(_filter_conditions(spec, params)) if filtered else "true"
            # Some-words matches are looked for through the query's selective lexemes (all of
            # them while none is common).
            common, ndoc = await self.common_lexemes(conn)
            some = any_
            if common:
                some = (f"search_selective_tsquery(ARRAY[{', '.join(variants)}]::text[], "
                        f"string_to_array({params.add(common)}, ' '), string_to_array({params.add(ndoc)}, ' ')::real[], "
                        f"{params.add(float(tuning.pair_limit))}::real)")
            exact = " || ".join(f"plainto_tsquery('russian', {v})" for v in variants)
            split = f"search_split_tsquery(ARRAY[{', '.join(variants)}]::text[])"
            sql = _TEXT_SQL.format(
                exact=exact, split=split, every=every, any=any_, some=some, raw=asked, prefix_low=asked,
                prefix_high=params.add(prefix_successor(raw)), where=where, src=src, limit=int(limit),
                cap=int(tuning.some_cap), every_cap=int(tuning.every_cap),
            )
            rows = await conn.fetch(sql, *params.values)
            hits = [(r["id"], float(r["score"])) for r in rows]
            raw_lower = " ".join(_SPLIT.findall(normalise_query(raw)))
            if sum(1 for r in rows if r["branch"] == 2) < FEW_WORD_HITS and len(raw_lower) >= 4:
                params = SqlParams()
                typo_where = " AND ".join(_filter_conditions(spec, params)) if filtered else "true"
                typo_sql = _TYPO_SQL.format(raw_lower=params.add(raw_lower), src=src, where=typo_where,
                                            limit=max(10, int(limit) // 4))
                seen = {i for i, _ in hits}
                hits += [(r["id"], float(r["score"])) for r in await fetch_with_custom_plan(conn, typo_sql, params.values)
                         if r["id"] not in seen]
        return hits[:limit], corrected

    async def _vector_filter(self, spec: MaterialFilterSpec) -> VectorFilter:
        unit = None
        if spec.unit is not None:
            async with self.pg.pool.acquire() as conn:
                unit = await conn.fetchval("SELECT unit_code FROM unit_aliases WHERE alias = $1",
                                           spec.unit.strip().lower())
            unit = unit or spec.unit  # an unknown unit matches nothing either way
        rub = spec.currency.upper() == "RUB"
        return VectorFilter(
            category_id=spec.category_id, unit=unit, supplier_id=spec.supplier_id,
            price_min=float(spec.price_min) if spec.price_min is not None and rub else None,
            price_max=float(spec.price_max) if spec.price_max is not None and rub else None,
        )

    async def _live(self, ids: Sequence[int], spec: MaterialFilterSpec, query: str | None = None,
                    searched: str | None = None) -> dict[int, float]:
        """Which of `ids` exist, are not deleted and pass every filter, by PostgreSQL; with
        `query` (and the rewrite the text side searches besides it), each one's full-text score
        for it (as the text side scores it), else 0."""
        if not ids:
            return {}
        params = SqlParams()
        p = params.add(list(ids))
        if query and spec == MaterialFilterSpec():
            # No filter: only the text scores are read here (half the cost: no probe of
            # `materials` per hit); liveness is checked when the hits become materials, as
            # for the text side's hits (the request's loader drops deleted rows).
            variants = [params.add(query)] + ([params.add(searched)] if searched else [])
            sql = (f"SELECT v.id, coalesce({_TEXT_SCORE}, 0.0)::float8 AS score "
                   f"FROM {_text_score_from(variants)} "
                   f"CROSS JOIN unnest({p}::bigint[]) AS v(id) LEFT JOIN material_search s ON s.material_id = v.id")
        else:
            score, src = "0.0", "materials m"
            if query:
                score = _TEXT_SCORE
                variants = [params.add(query)] + ([params.add(searched)] if searched else [])
                src = (f"{_text_score_from(variants)} CROSS JOIN materials m "
                       "LEFT JOIN material_search s ON s.material_id = m.id")
            where = " AND ".join(_filter_conditions(spec, params))
            sql = (f"SELECT m.id, coalesce({score}, 0.0)::float8 AS score FROM {src} "
                   f"WHERE m.id = ANY({p}::bigint[]) AND {where}")
        async with self.pg.pool.acquire() as conn:
            rows = await conn.fetch(sql, *params.values)
        return {r["id"]: r["score"] for r in rows}

    async def vector_query(self, query: str, spec: MaterialFilterSpec,
                           rewrite: QueryRewrite | None = None) -> tuple[np.ndarray, VectorFilter]:
        """The query's vector (with `rewrite`, of the corrected query) and the filter the vector
        index applies itself."""
        if self.embedder is None or self.index is None:
            raise SearchUnavailable("no vector index is configured")
        if not await self.open_vectors():
            raise SearchUnavailable("the vector store is unavailable")
        vector, flt = await asyncio.gather(self.embedder.query(embedded_text(query, rewrite), self.shared_vectors),
                                           self._vector_filter(spec))
        return vector, flt

    async def vector_side(self, query: str, spec: MaterialFilterSpec, limit: int,
                          rewrite: QueryRewrite | None = None, toward: Sequence[int] = (),
                          prepared: tuple[np.ndarray, VectorFilter] | None = None,
                          known: dict[int, float] | None = None,
                          ) -> tuple[list[tuple[int, float]], dict[int, float]]:
        """The vector side's live hits (id, cosine), and the full-text score of each (for the
        query as written and as `rewrite` searches it, when given). With `rewrite`, the
        corrected query is what is embedded; `prepared`: `vector_query`'s answer, when the
        caller has it.

        `toward` (HYBRID's feedback, `feedback_k`): materials the query is moved towards before
        the search, by `feedback_weight` times the mean of their stored vectors (pseudo-relevance
        feedback: the text side's first hits say what the query means in this catalog's words).
        When their vectors cannot be read, the query's own vector is searched. `known`: the text
        side's hits with their scores, for the same filter; those are not re-checked."""
        vector, flt = prepared or await self.vector_query(query, spec, rewrite)
        if toward:
            try:
                stored = await self.index.vectors_of(list(toward))  # type: ignore[union-attr]
            except Exception as exc:  # the query as it is
                log.warning("search feedback vectors unavailable: %s", exc)
                stored = {}
            if stored:
                moved = (np.asarray(vector, dtype=np.float32)
                         + self.tuning.feedback_weight * np.mean(np.stack(list(stored.values())), axis=0))
                vector = moved / (float(np.linalg.norm(moved)) or 1.0)
        found = await self.index.search(vector, flt, limit)  # type: ignore[union-attr]
        known = known or {}
        live = await self._live([i for i, _ in found if i not in known], spec, query,
                                rewrite.searched if rewrite else None)
        live.update((i, known[i]) for i, _ in found if i in known)
        return [(i, s) for i, s in found if i in live], live

    # -- search ---------------------------------------------------------------------------

    async def search(self, query: str, spec: MaterialFilterSpec, mode: str = "HYBRID",
                     depth: int | None = None, *, count: bool = True) -> SearchOutcome:
        """Both sides (or one), fused. `count`: the query counts towards suggest()'s popular queries."""
        started = time.perf_counter()
        tuning = self.tuning
        depth = depth or tuning.depth
        normalised = normalise_query(query)
        if normalised and count:
            self.popular[normalised] += 1
        if self.follow_indexes is not None and self.results.size and time.monotonic() >= self._next_follow:
            self._next_follow = time.monotonic() + FOLLOW_INTERVAL
            try:
                await self.follow_indexes()
            except Exception as exc:  # PostgreSQL unavailable: nothing is reused until it answers
                log.warning("could not read the search index cursors: %s", exc)
                self.results.invalidate()
        key = (query, mode, spec, depth)
        reused = self.results.get(key) if mode == "TEXT" or self._vectors_look_available() else None
        if reused is not None:  # hits are read-only (FusedHits); the rest is the caller's copy
            return replace(reused, terms=list(reused.terms), took_ms=(time.perf_counter() - started) * 1000)
        epoch = self.results.epoch
        terms = query_terms(query)
        text: list[tuple[int, float]] | None = None
        vector: list[tuple[int, float]] | None = None
        vector_text: dict[int, float] = {}
        corrected: str | None = None
        failures: list[str] = []

        sides = {"HYBRID": ("text", "vector"), "TEXT": ("text",), "VECTOR": ("vector",)}[mode]
        rewrite: QueryRewrite | None = None
        if len(sides) == 2:
            # Both sides read the rewrite (the vector side scores its hits' text for it too).
            try:
                async with asyncio.timeout(tuning.text_timeout):
                    rewrite = await self.rewrite(query)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the text side reports it; the vector side does without
                log.warning("search query rewrite failed: %s", exc)

        # HYBRID's feedback: the vector side embeds the query while the text side runs, then
        # searches for it moved towards the text side's first hits (`feedback_k`).
        text_done = asyncio.Event() if len(sides) == 2 and tuning.feedback_k > 0 else None

        async def run(side: str) -> None:
            nonlocal text, vector, vector_text, corrected
            try:
                if side == "text":
                    try:
                        async with asyncio.timeout(tuning.text_timeout):
                            text, corrected = await self.text_side(query, spec, depth, rewrite)
                    finally:
                        if text_done is not None:
                            text_done.set()
                else:
                    limit = max(depth, tuning.vector_depth)
                    async with asyncio.timeout(tuning.vector_timeout):
                        prepared = await self.vector_query(query, spec, rewrite)
                    toward: list[int] = []
                    if text_done is not None:
                        await text_done.wait()  # bounded by the text side's own timeout
                        toward = [i for i, _ in (text or ())[:tuning.feedback_k]]
                    async with asyncio.timeout(tuning.vector_timeout):
                        vector, vector_text = await self.vector_side(query, spec, limit, rewrite, toward, prepared,
                                                                     known=dict(text or ()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a side that fails or is late is reported, the other answers
                kind = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc}"
                failures.append(f"{side} side {kind}")
                log.warning("search %s side %s", side, kind)

        if len(sides) == 2:
            await asyncio.gather(run("text"), run("vector"))
        else:
            await run(sides[0])
        if text is None and vector is None:
            raise SearchUnavailable("search is unavailable: " + "; ".join(failures))
        degraded = len(sides) == 2 and (text is None or vector is None)
        hits = self._fuse(text, vector, vector_text, depth)
        if corrected:
            terms += [t for t in query_terms(corrected) if t not in terms]
        outcome = SearchOutcome(hits=hits, mode=mode, degraded=degraded,
                                took_ms=(time.perf_counter() - started) * 1000, terms=terms, corrected=corrected)
        if not degraded:
            self.results.put(key, epoch, replace(outcome, terms=list(terms)))
        return outcome

    def _fuse(self, text: list[tuple[int, float]] | None, vector: list[tuple[int, float]] | None,
              vector_text: dict[int, float] | None = None, depth: int | None = None) -> FusedHits:
        """The fused list (its first `depth` hits, when given)."""
        text_scores = dict(text or ())
        vector_scores = dict(vector or ())
        if text is not None and vector is None:
            ranked = list(text)
        elif vector is not None and text is None:
            ranked = list(vector)
        else:
            tuning = self.tuning
            if tuning.fusion == "rrf":
                fused = rrf([(text or [], tuning.text_weight), (vector or [], tuning.vector_weight)], tuning.k)
            else:
                fused = fuse_scores(text or [], vector or [], vector_text or {}, tuning.rank_weight,
                                    tuning.every_word_bonus)
            # Best score first, ties by id (a stable sort on score after one on id).
            ranked = sorted(fused.items(), key=itemgetter(0))
            ranked.sort(key=itemgetter(1), reverse=True)
            # An exact SKU match is what the user asked for: it stays first whatever the vectors say.
            exact = {i for i, s in (text or []) if s >= SKU_EXACT}
            if exact:
                ranked.sort(key=lambda kv: kv[0] not in exact)
        # Only what a page can read is kept (the arrays are most of fusion's cost).
        return FusedHits(ranked[:depth] if depth is not None else ranked, text_scores, vector_scores)

    # -- the other entry points -------------------------------------------------------------

    async def suggest(self, prefix: str, first: int) -> list[str]:
        normalised = normalise_query(prefix)
        if not normalised:
            return []
        pattern = like_prefix(normalised)
        split_pattern = like_prefix(" ".join(_SPLIT.findall(normalised)) if _SPLIT.findall(normalised) else normalised)
        async with self.pg.pool.acquire() as conn:
            rows = await conn.fetch(
                """
                (SELECT query AS text, hits, 0 AS source FROM search_queries
                 WHERE query LIKE $1 ORDER BY hits DESC, query LIMIT $3)
                UNION ALL
                (SELECT m.name, 0, 1 FROM material_search s JOIN materials m ON m.id = s.material_id
                 WHERE m.deleted_at IS NULL AND (s.name_norm LIKE $2 OR lower(m.name) LIKE $1)
                 ORDER BY length(m.name), m.name LIMIT $3 * 3)
                """,
                pattern, split_pattern, first,
            )
        out: list[str] = []
        seen: set[str] = set()
        for row in sorted(rows, key=lambda r: (r["source"], -r["hits"])):
            key = normalise_query(row["text"])
            if key not in seen:
                seen.add(key)
                out.append(row["text"])
            if len(out) >= first:
                break
        return out

    async def warm_queries(self, top: int) -> int:
        """Embeds the `top` most searched queries (search_queries) into the query-vector
        caches, so their first search after a start pays no embedding; returns how many."""
        if self.embedder is None or top <= 0:
            return 0
        rows = await self.pg.fetch("SELECT query FROM search_queries ORDER BY hits DESC, query LIMIT $1", top)
        for row in rows:
            await self.embedder.query(row["query"], self.shared_vectors)
        return len(rows)

    async def flush_popular(self) -> int:
        """Adds the queries counted since the last flush to `search_queries` (suggest's source)."""
        if not self.popular:
            return 0
        counts, self.popular = self.popular, Counter()
        queries = [q[:MAX_QUERY_LENGTH] for q in counts]
        async with self.pg.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO search_queries (query, hits) SELECT * FROM unnest($1::text[], $2::bigint[]) "
                "ON CONFLICT (query) DO UPDATE SET hits = search_queries.hits + excluded.hits, last_seen = now()",
                queries, [counts[q] for q in counts],
            )
        return len(queries)

    async def match_material(self, name: str, unit: str | None, first: int) -> SearchOutcome:
        """Catalog candidates for a raw supplier row: hybrid search, the same unit first."""
        outcome = await self.search(name, MaterialFilterSpec(), "HYBRID", depth=max(50, first * 5), count=False)
        if unit:
            async with self.pg.pool.acquire() as conn:
                code = await conn.fetchval("SELECT unit_code FROM unit_aliases WHERE alias = $1", unit.strip().lower())
                ids = [h.material_id for h in outcome.hits]
                units = dict(await conn.fetch("SELECT id, unit_code FROM materials WHERE id = ANY($1::bigint[])", ids))
            if code is not None:
                outcome.hits = sorted(outcome.hits, key=lambda h: units.get(h.material_id) != code)
        outcome.hits = outcome.hits[:first]
        return outcome

    async def similar(self, material_id: int, first: int) -> list[Hit]:
        """Nearest materials by meaning (the material's own vector, or one made now if not indexed yet)."""
        if self.embedder is None or self.index is None:
            raise SearchUnavailable("no vector index is configured")
        if not await self.open_vectors():
            raise SearchUnavailable("the vector store is unavailable")
        vector = await self.index.vector_of(material_id)
        if vector is None:
            async with self.pg.pool.acquire() as conn:
                rows = await conn.fetch(_PAYLOADS, [material_id])
            if not rows:
                return []
            vector = np.asarray((await self.embedder.passages([passage_text(rows[0])]))[0])
        found = await self.index.search(vector, VectorFilter(), first + 5, exclude=[material_id])
        live = await self._live([i for i, _ in found], MaterialFilterSpec())
        return [Hit(i, s, None, s) for i, s in found if i in live][:first]


def with_tuning(service: SearchService, **changes: Any) -> SearchService:
    """The same service with other fusion parameters (the relevance bench sweeps them)."""
    return SearchService(service.pg, service.embedder, service.index, replace(service.tuning, **changes),
                         RecentResults(service.results.size, service.results.ttl))
