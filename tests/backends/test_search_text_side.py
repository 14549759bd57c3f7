"""The text side's tiers on broad queries: every word as written before digits split, an
unspecific query ranking a bounded number of documents, and some-words matches looked for
through the query's selective lexemes (or pairs of common ones), as PostgreSQL's statistics
tell common from selective."""

from __future__ import annotations

import asyncpg

from backends.catalog import MaterialFilterSpec
from backends.postgres import PostgresBackend
from backends.search import SearchService, SearchTuning
from backends.search_index import TextIndexer
from backends.writes import MaterialValues, create_material

SPEC = MaterialFilterSpec()

# 28 names: "краска" in 14, "белая" in 12, "грунт" in 10, "матовая" in 5, "эмаль" in 4, "фасадная" in 1.
PAINTS = ([f"Краска белая {i}" for i in range(1, 9)] + [f"Краска {i} матовая" for i in range(1, 6)]
          + [f"Эмаль белая {i}" for i in range(1, 5)] + ["Краска фасадная зелёная"]
          + [f"Грунт {i}" for i in range(1, 11)])


async def catalog(pg: PostgresBackend, names: list[str]) -> dict[int, str]:
    ids = {}
    for name in names:
        created, _ = await create_material(pg, MaterialValues(name=name, unit="шт"))
        ids[created["id"]] = name
    await TextIndexer(pg).rebuild()  # analyses material_search: the common lexemes come from there
    return ids


async def names_found(service: SearchService, names: dict[int, str], query: str, limit: int = 50) -> list[str]:
    """The names the words found (typo matches by trigrams, which score 0.01 at most, left out)."""
    hits, _ = await service.text_side(query, SPEC, limit)
    return [names[i] for i, score in hits if score > 0.01]


async def test_common_lexemes_come_from_the_documents_statistics(empty_catalog: PostgresBackend,
                                                                 conn: asyncpg.Connection) -> None:
    await catalog(empty_catalog, PAINTS)
    lexemes, counts = await SearchService(empty_catalog, None, None, SearchTuning(common_lexeme=6)).common_lexemes(conn)
    common = dict(zip(lexemes.split(" "), map(int, counts.split(" ")), strict=True))
    # Stemmed lexemes and the names' words as written.
    assert common == {"краск": 14, "краска": 14, "бел": 12, "белая": 12, "грунт": 10}
    # Off: none are read.
    assert await SearchService(empty_catalog, None, None, SearchTuning(common_lexeme=0)).common_lexemes(conn) == ("", "")


async def test_some_words_come_through_selective_lexemes_or_two_common_ones(empty_catalog: PostgresBackend) -> None:
    names = await catalog(empty_catalog, PAINTS)
    query = "краска белая фасадная"  # no name holds all three words
    gated = SearchService(empty_catalog, None, None, SearchTuning(common_lexeme=6, pair_limit=20))
    found = await names_found(gated, names, query)
    # "фасадная" is selective; "краска" and "белая" are common and count together, not alone.
    assert set(found) == {"Краска фасадная зелёная"} | {f"Краска белая {i}" for i in range(1, 9)}
    # Pairs off: the selective word alone.
    alone = SearchService(empty_catalog, None, None, SearchTuning(common_lexeme=6, pair_limit=0))
    assert await names_found(alone, names, query) == ["Краска фасадная зелёная"]
    # Gating off: every name with any of the words.
    every = SearchService(empty_catalog, None, None, SearchTuning(common_lexeme=0))
    assert len(await names_found(every, names, query)) == 8 + 5 + 4 + 1
    # The ranking is the same for the names both read: all the words count in it.
    assert found == [n for n in await names_found(every, names, query) if n in set(found)]


async def test_a_query_of_common_words_only_looks_through_the_least_common(empty_catalog: PostgresBackend) -> None:
    names = await catalog(empty_catalog, PAINTS)
    service = SearchService(empty_catalog, None, None, SearchTuning(common_lexeme=6, pair_limit=0))
    found = await names_found(service, names, "краска грунт")
    assert sorted(found) == sorted(f"Грунт {i}" for i in range(1, 11))


async def test_an_unspecific_query_ranks_at_most_every_cap_documents(empty_catalog: PostgresBackend) -> None:
    names = await catalog(empty_catalog, PAINTS)
    capped = SearchService(empty_catalog, None, None, SearchTuning(every_cap=3))
    found = await names_found(capped, names, "краска")
    assert len(found) == 3 and all(n.startswith("Краска") for n in found)
    assert len(await names_found(SearchService(empty_catalog, None, None), names, "краска")) == 14


async def test_every_word_as_written_comes_before_digits_split(empty_catalog: PostgresBackend) -> None:
    names = await catalog(empty_catalog, ["Плитка 300x600мм Гамма", "Плитка 300x300мм Альфа",
                                          "Плитка 300x300мм Бета", "Плитка 12 мм Дельта"])
    service = SearchService(empty_catalog, None, None)
    # "300x600мм" holds every word of "300 x 300 мм" once digits are split: found after the
    # names that hold "300x300мм" itself (and before those with some of the words), and not
    # read at all when those fill the page.
    assert await names_found(service, names, "плитка 300x300мм") == [
        "Плитка 300x300мм Альфа", "Плитка 300x300мм Бета", "Плитка 300x600мм Гамма", "Плитка 12 мм Дельта"]
    assert await names_found(service, names, "плитка 300x300мм", limit=2) == [
        "Плитка 300x300мм Альфа", "Плитка 300x300мм Бета"]
    # Split words still find a name that writes them apart.
    assert (await names_found(service, names, "плитка 12мм"))[0] == "Плитка 12 мм Дельта"


async def test_the_selective_tsquery_function(conn: asyncpg.Connection) -> None:
    async def selective(queries: list[str], common: dict[str, float], pair_limit: float) -> str:
        return await conn.fetchval("SELECT search_selective_tsquery($1, $2, $3, $4)::text", queries,
                                   list(common), list(common.values()), pair_limit)

    assert await selective(["binder cabinet lighting"], {}, 0) == "'binder' | 'cabinet' | 'light'"
    assert await selective(["binder cabinet lighting"], {"cabinet": 1500, "light": 1200}, 5000) == (
        "'binder' | 'cabinet' & 'light'")
    assert await selective(["binder cabinet lighting"], {"cabinet": 1500, "light": 1200}, 1000) == "'binder'"
    assert await selective(["cabinet lighting"], {"cabinet": 1500, "light": 1200}, 1000) == "'light'"
    # Every variant's lexemes, digits split too, each once.
    assert await selective(["12мм", "12 мм"], {"мм": 9000}, 0) == "'12' | '12мм'"
    assert await conn.fetchval("SELECT search_split_tsquery(ARRAY['краска белая'])") is None
    assert await conn.fetchval("SELECT search_split_tsquery(ARRAY['плитка 300x300мм', 'плитка 300 x 300мм'])::text") == (
        "'плитк' & '300' & 'x' & '300' & 'мм'")
