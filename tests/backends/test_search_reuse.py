"""Reuse of recent search results (backends.search.RecentResults): a repeated search costs no
SQL, and any change of the indexes (a write the indexers applied, here or by another
instance) drops what was kept, so a changed or deleted material is never served from it."""

from __future__ import annotations

import asyncio

from backends.catalog import MaterialFilterSpec
from backends.embedder import HashEmbedder
from backends.postgres import PostgresBackend, track_queries
from backends.search import RecentResults, SearchService
from backends.search_index import TextIndexer, VectorIndexer
from backends.vectors import QdrantClientIndex
from backends.writes import MaterialValues, create_material, delete_material, update_material

ALL = MaterialFilterSpec()


async def _service(pg: PostgresBackend, size: int = 100) -> tuple[SearchService, TextIndexer, VectorIndexer]:
    embedder = HashEmbedder(64)
    index = QdrantClientIndex(location=":memory:")
    await index.open(embedder.model_id, embedder.dim)
    results = RecentResults(size, ttl=60.0)
    service = SearchService(pg, embedder, index, results=results)
    service.vectors_open = True
    text = TextIndexer(pg, on_change=results.invalidate)
    vectors = VectorIndexer(pg, embedder, index, on_change=results.invalidate)
    await text.run_once()
    await vectors.rebuild()
    return service, text, vectors


async def _ids(service: SearchService, query: str, mode: str = "HYBRID",
               spec: MaterialFilterSpec = ALL) -> list[int]:
    return [h.material_id for h in (await service.search(query, spec, mode)).hits]


async def test_a_repeated_search_is_reused_and_a_write_drops_it(empty_catalog: PostgresBackend) -> None:
    pg = empty_catalog
    a, _ = await create_material(pg, MaterialValues(name="Цемент М500 Д0", unit="кг"))
    b, _ = await create_material(pg, MaterialValues(name="Цемент белый М600", unit="кг"))
    await create_material(pg, MaterialValues(name="Арматура А500С 12мм", unit="т"))
    service, text, vectors = await _service(pg)

    first = await _ids(service, "цемент", "TEXT")
    assert set(first) == {a["id"], b["id"]}
    stats = track_queries()
    again = await service.search("цемент", ALL, "TEXT")
    assert [h.material_id for h in again.hits] == first
    assert stats.round_trips == 0 and service.results.hits == 1
    # What callers get cannot change what is kept: the hits are read-only, the rest a copy.
    assert not hasattr(again.hits, "reverse") and not hasattr(again.hits, "__setitem__")
    again.terms.append("бетон")
    assert "бетон" not in (await service.search("цемент", ALL, "TEXT")).terms
    # Another mode, query or filter is another entry.
    await service.search("цемент", ALL, "HYBRID")
    await service.search("цемент", MaterialFilterSpec(unit="т"), "TEXT")
    assert len(service.results) == 3

    # A rename: kept until the indexers apply it, then dropped; the next search finds the new name.
    await update_material(pg, a["id"], MaterialValues(name="Бетон М300"))
    assert await _ids(service, "цемент", "TEXT") == first  # the index has not changed yet
    assert await text.run_once() > 0
    assert len(service.results) == 0
    await vectors.run_once()
    assert await _ids(service, "цемент", "TEXT") == [b["id"]]
    assert await _ids(service, "бетон", "TEXT") == [a["id"]]

    # A deletion, the same way, in both modes.
    await delete_material(pg, b["id"])
    await _ids(service, "цемент", "HYBRID")
    await text.run_once()
    await vectors.run_once()
    assert b["id"] not in await _ids(service, "цемент", "HYBRID")
    assert await _ids(service, "цемент", "TEXT") == []


async def test_another_instance_moving_the_cursor_drops_kept_results(empty_catalog: PostgresBackend) -> None:
    pg = empty_catalog
    await create_material(pg, MaterialValues(name="Песок речной", unit="м³"))
    service, text, _ = await _service(pg)
    other = TextIndexer(pg)  # another instance's indexer: it applies the events first
    await _ids(service, "песок")
    assert len(service.results) == 1
    await create_material(pg, MaterialValues(name="Песок карьерный", unit="м³"))
    assert await other.run_once() > 0
    assert await text.run_once() == 0  # nothing left to apply here, but the cursor moved
    assert len(service.results) == 0
    assert len(await _ids(service, "песок", "TEXT")) == 2


async def test_a_search_overlapping_an_index_change_is_not_kept(empty_catalog: PostgresBackend) -> None:
    pg = empty_catalog
    await create_material(pg, MaterialValues(name="Щебень гранитный 5-20мм", unit="м³"))
    service, _, _ = await _service(pg)
    original = service.text_side

    async def slow_text_side(*args, **kwargs):  # an index change lands while the search runs
        result = await original(*args, **kwargs)
        service.results.invalidate()
        return result

    service.text_side = slow_text_side  # type: ignore[method-assign]
    await _ids(service, "щебень")
    assert len(service.results) == 0
    service.text_side = original  # type: ignore[method-assign]
    await _ids(service, "щебень")
    assert len(service.results) == 1


async def test_degraded_results_are_not_kept_and_reuse_can_be_off(empty_catalog: PostgresBackend) -> None:
    pg = empty_catalog
    await create_material(pg, MaterialValues(name="Кирпич М150", unit="шт"))
    service, _, _ = await _service(pg)
    await service.index.close()  # the vector side fails: degraded
    outcome = await service.search("кирпич", ALL, "HYBRID")
    assert outcome.degraded and outcome.hits and len(service.results) == 0
    await service.index.open(service.embedder.model_id, service.embedder.dim)
    await VectorIndexer(pg, service.embedder, service.index).rebuild()
    assert not (await service.search("кирпич", ALL, "HYBRID")).degraded
    assert len(service.results) == 1
    # A store that goes away again: what was kept is not served, the search says degraded.
    await service.index.close()
    assert (await service.search("кирпич", ALL, "HYBRID")).degraded
    assert not (await service.search("кирпич", ALL, "TEXT")).degraded  # the text side alone is whole

    off, _, _ = await _service(pg, size=0)
    await off.search("кирпич", ALL, "TEXT")
    stats = track_queries()
    await off.search("кирпич", ALL, "TEXT")
    assert stats.round_trips > 0 and len(off.results) == 0


async def test_entries_expire_and_the_oldest_go_first(empty_catalog: PostgresBackend) -> None:
    pg = empty_catalog
    await create_material(pg, MaterialValues(name="Гипсокартон влагостойкий 12.5мм", unit="лист"))
    service, _, _ = await _service(pg, size=2)
    for q in ("гипсокартон", "влагостойкий", "гипсокартон влагостойкий"):
        await service.search(q, ALL, "TEXT")
    assert len(service.results) == 2
    assert service.results.get(("гипсокартон", "TEXT", ALL, service.tuning.depth)) is None  # evicted
    service.results.ttl = 0.05
    service.results.invalidate()
    await service.search("гипсокартон", ALL, "TEXT")
    await asyncio.sleep(0.1)
    assert service.results.get(("гипсокартон", "TEXT", ALL, service.tuning.depth)) is None  # expired


async def test_a_process_that_runs_no_indexer_follows_the_cursors(empty_catalog: PostgresBackend,
                                                                  monkeypatch) -> None:
    import functools

    import backends.search as search_module
    from backends.search_index import follow_cursors

    pg = empty_catalog
    await create_material(pg, MaterialValues(name="Плитка керамическая", unit="м²"))
    api, api_text, api_vectors = await _service(pg)  # from now on, this process only searches
    api.follow_indexes = functools.partial(follow_cursors, pg, [api_text, api_vectors])
    monkeypatch.setattr(search_module, "FOLLOW_INTERVAL", 0.0)
    assert len(await _ids(api, "плитка", "TEXT")) == 1
    await _ids(api, "плитка", "TEXT")
    assert api.results.hits == 1
    await create_material(pg, MaterialValues(name="Плитка тротуарная", unit="м²"))
    assert await TextIndexer(pg).run_once() > 0  # another process applies the event
    assert len(await _ids(api, "плитка", "TEXT")) == 2
