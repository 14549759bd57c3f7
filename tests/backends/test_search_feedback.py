"""HYBRID's feedback: the vector side searches for the query moved towards the text side's first
hits; it never returns a deleted material, and when the vectors of those hits cannot be read
the query's own vector is searched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from backends.catalog import CatalogReader, MaterialFilterSpec
from backends.postgres import PostgresBackend
from backends.prices import PriceReader
from backends.search import SearchService, SearchTuning
from backends.vectors import VectorFilter
from backends.writes import delete_material
from loaders.registry import RequestLoaders
from tests.catalog_fixtures import indexed_materials

NAMES = ["Цемент М500 Д0 50кг", "Цемент М400 25кг", "Цементно-песчаная смесь М300", "Клей плиточный цементный",
         "Арматура А500С 12мм", "Арматура А240 8мм", "Гипсокартон влагостойкий 12.5мм", "Гипсокартон 9.5мм",
         "Песок речной мытый", "Щебень гранитный 5-20мм"]


@pytest.fixture
async def catalog(empty_catalog: PostgresBackend) -> AsyncIterator[tuple[PostgresBackend, Any, dict[str, int]]]:
    ids, embedder, index = await indexed_materials(empty_catalog, NAMES)
    yield empty_catalog, (embedder, index), ids
    await index.close()


async def test_feedback_moves_the_query_towards_the_text_sides_first_hits(catalog: Any) -> None:
    pg, (embedder, index), ids = catalog
    service = SearchService(pg, embedder, index, SearchTuning(feedback_k=2, feedback_weight=1.0))
    spec = MaterialFilterSpec()
    text, _ = await service.text_side("цемент", spec, 10)
    first_two = [i for i, _ in text[:2]]
    plain, _ = await service.vector_side("цемент", spec, 10)
    moved, scores = await service.vector_side("цемент", spec, 10, toward=first_two)
    # The query's vector moved: the cosines are those of another vector, against the same points.
    query = await embedder.query("цемент")
    expected = query + np.mean(np.stack([(await index.vectors_of(first_two))[i] for i in first_two]), axis=0)
    expected /= np.linalg.norm(expected)
    stored = await index.vectors_of([i for i, _ in moved])
    assert all(abs(float(stored[i] @ expected) - s) < 1e-4 for i, s in moved)
    assert dict(moved) != dict(plain)
    # Every hit has its text score, as without feedback.
    assert {i for i, _ in moved} <= set(scores)
    assert scores[ids["Цемент М400 25кг"]] >= 1.0 and scores[ids["Песок речной мытый"]] < 1.0


async def test_hybrid_moves_the_vector_side_towards_the_text_sides_first_hits(catalog: Any) -> None:
    pg, (embedder, index), _ = catalog
    spec = MaterialFilterSpec()
    tuning = SearchTuning(feedback_k=3, feedback_weight=1.0)
    outcome = await SearchService(pg, embedder, index, tuning).search("цемент песок", spec, "HYBRID", count=False)
    service = SearchService(pg, embedder, index, tuning)
    rewrite = await service.rewrite("цемент песок")
    text, _ = await service.text_side("цемент песок", spec, tuning.depth, rewrite)
    moved, _ = await service.vector_side("цемент песок", spec, tuning.vector_depth, rewrite,
                                         toward=[i for i, _ in text[:3]])
    plain, _ = await service.vector_side("цемент песок", spec, tuning.vector_depth, rewrite)
    assert dict(moved) != dict(plain)
    # The hits' vector scores are the moved query's cosines.
    scored = {h.material_id: h.vector_score for h in outcome.hits if h.vector_score is not None}
    assert scored.keys() == dict(moved).keys()
    assert all(abs(scored[i] - s) < 1e-6 for i, s in moved)


@pytest.mark.parametrize("filtered", [True, False])
async def test_feedback_never_returns_a_deleted_material(catalog: Any, filtered: bool) -> None:
    pg, (embedder, index), ids = catalog
    service = SearchService(pg, embedder, index, SearchTuning(feedback_k=3))
    gone = ids["Песок речной мытый"]
    await delete_material(pg, gone)  # still in both indexes: its event is not applied
    spec = MaterialFilterSpec(unit="шт") if filtered else MaterialFilterSpec()
    text, _ = await service.text_side("цемент песок", spec, 10)
    moved, scores = await service.vector_side("цемент песок", spec, 10, toward=[i for i, _ in text[:3]])
    assert moved
    # The index does hold it.
    assert gone in {i for i, _ in await index.search(await embedder.query("песок речной мытый"), VectorFilter(), 10)}
    if filtered:
        # With a filter every hit is re-checked against `materials`.
        assert gone not in {i for i, _ in moved} and gone not in scores
    # Without one, liveness is the page's, as for text hits: the search's hits become
    # materials through the request's loader, which drops deleted rows (resolvers.search).
    loaders = RequestLoaders.build(CatalogReader(pg), PriceReader(pg))
    outcome = await service.search("цемент песок", spec, "HYBRID")
    rows = await loaders.material_by_id.load_many([h.material_id for h in outcome.hits])
    shown = [r["id"] for r in rows if r is not None and not r["deleted"]]
    assert shown and gone not in shown


async def test_unreadable_feedback_vectors_leave_the_querys_own_vector(catalog: Any) -> None:
    pg, (embedder, index), _ = catalog

    class NoVectors:
        def __getattr__(self, name: str) -> Any:
            return getattr(index, name)

        async def vectors_of(self, point_ids: Any) -> Any:
            raise RuntimeError("store gone")

    spec = MaterialFilterSpec()
    plain = await SearchService(pg, embedder, index, SearchTuning(feedback_k=0)).search(
        "арматура 12", spec, "HYBRID", count=False)
    failing = await SearchService(pg, embedder, NoVectors(), SearchTuning(feedback_k=5)).search(
        "арматура 12", spec, "HYBRID", count=False)
    assert [h.material_id for h in failing.hits] == [h.material_id for h in plain.hits]
    assert not failing.degraded


async def test_the_vector_side_embeds_the_corrected_query(catalog: Any) -> None:
    pg, (embedder, index), ids = catalog

    class Recording:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def __getattr__(self, name: str) -> Any:
            return getattr(embedder, name)

        async def query(self, text: str, shared: Any = None) -> Any:
            self.asked.append(text)
            return await embedder.query(text, shared)

    recording = Recording()
    service = SearchService(pg, recording, index)
    outcome = await service.search("цемнт м500", MaterialFilterSpec(), "HYBRID", count=False)
    assert outcome.corrected == "цемент м500"
    assert set(recording.asked) == {"цемент м500"}  # never the typo
    assert outcome.hits[0].material_id == ids["Цемент М500 Д0 50кг"]
    # VECTOR alone reads no rewrite: the query as written.
    recording.asked.clear()
    await service.search("цемнт м500", MaterialFilterSpec(), "VECTOR", count=False)
    assert recording.asked == ["цемнт м500"]


async def test_the_vector_side_does_not_recheck_what_the_text_side_returned(catalog: Any) -> None:
    pg, (embedder, index), ids = catalog
    service = SearchService(pg, embedder, index)
    spec = MaterialFilterSpec(unit="шт")
    cement = ids["Цемент М400 25кг"]
    _, scores = await service.vector_side("цемент", spec, 10)
    assert cement in scores and scores[cement] < 7.0
    # The text side's hits passed the same filter and carry their own scores: taken as they are.
    _, known = await service.vector_side("цемент", spec, 10, known={cement: 7.0})
    assert known[cement] == 7.0
    assert {i: s for i, s in known.items() if i != cement} == {i: s for i, s in scores.items() if i != cement}
