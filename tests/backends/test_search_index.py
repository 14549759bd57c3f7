"""The search indexers: text documents and vectors follow the outbox; `reindex` rebuilds both."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from backends.embedder import HashEmbedder
from backends.postgres import PostgresBackend
from backends.search_index import TextIndexer, VectorIndexer
from backends.vectors import QdrantClientIndex, VectorFilter
from backends.writes import MaterialValues, create_material, delete_material, update_material

ROOT = Path(__file__).resolve().parents[2]


async def _documents(conn: asyncpg.Connection) -> dict[int, str]:
    return {r["material_id"]: r["name_norm"] for r in await conn.fetch("SELECT material_id, name_norm FROM material_search")}


async def _words(conn: asyncpg.Connection) -> dict[str, int]:
    return {r["word"]: r["ndoc"] for r in await conn.fetch("SELECT word, ndoc FROM search_words")}


async def test_text_and_vector_indexes_follow_writes(empty_catalog: PostgresBackend, conn: asyncpg.Connection) -> None:
    text = TextIndexer(empty_catalog)
    embedder = HashEmbedder(64)
    index = QdrantClientIndex(location=":memory:")
    await index.open(embedder.model_id, embedder.dim)
    vectors = VectorIndexer(empty_catalog, embedder, index)
    # No cursor yet: the first run builds everything (nothing, here) and sets the cursor.
    assert await text.run_once() == 1 and await vectors.needs_rebuild()
    assert await vectors.rebuild() == 0 and not await vectors.needs_rebuild()

    first, _ = await create_material(empty_catalog, MaterialValues(name="Цемент М500 Д0", unit="кг"))
    second, _ = await create_material(empty_catalog, MaterialValues(name="Арматура А500С 12мм", unit="т"))
    a, b = first["id"], second["id"]
    assert await text.run_once() > 0 and await vectors.run_once() > 0
    assert (await _documents(conn)) == {a: "цемент м 500 д 0", b: "арматура а 500 с 12 мм"}
    assert await index.count() == 2
    # The vocabulary that corrects misspelt queries: the names' words of letters, three or more.
    assert await _words(conn) == {"цемент": 1, "арматура": 1}
    # Nothing new: nothing to do.
    assert await text.run_once() == 0 and await vectors.run_once() == 0

    await update_material(empty_catalog, a, MaterialValues(name="Цемент белый М600"))
    await delete_material(empty_catalog, b)
    await text.run_once()
    await vectors.run_once()
    assert (await _documents(conn)) == {a: "цемент белый м 600"}
    assert await index.count() == 1
    # Counts only grow between rebuilds (correction only adds matches, so that is harmless) ...
    assert await _words(conn) == {"цемент": 2, "арматура": 1, "белый": 1}
    # ... and a rebuild counts afresh.
    await text.rebuild()
    assert await _words(conn) == {"цемент": 1, "белый": 1}
    hits = await index.search(await embedder.query("цемент белый"), VectorFilter(), 5)
    assert [h[0] for h in hits] == [a]
    await index.close()


async def test_a_lost_vector_store_is_rebuilt(empty_catalog: PostgresBackend) -> None:
    embedder = HashEmbedder(64)
    for name in ("Песок речной", "Щебень гранитный 5-20мм", "Кирпич М150"):
        await create_material(empty_catalog, MaterialValues(name=name, unit="шт"))
    index = QdrantClientIndex(location=":memory:")
    await index.open(embedder.model_id, embedder.dim)
    vectors = VectorIndexer(empty_catalog, embedder, index)
    await vectors.rebuild()
    assert await index.count() == 3
    await index.close()
    fresh = QdrantClientIndex(location=":memory:")  # a new, empty store behind the same cursor
    await fresh.open(embedder.model_id, embedder.dim)
    again = VectorIndexer(empty_catalog, embedder, fresh)
    assert await again.needs_rebuild()
    assert await again.rebuild() == 3 and await fresh.count() == 3
    await fresh.close()


async def test_a_text_rebuild_leaves_no_pending_gin_entries(empty_catalog: PostgresBackend,
                                                             conn: asyncpg.Connection) -> None:
    for i in range(300):
        await create_material(empty_catalog, MaterialValues(name=f"Профлист С{i} оцинкованный {i}x1150мм", unit="шт"))
    await TextIndexer(empty_catalog).rebuild()
    indexes = ["material_search_document_idx", "material_search_name_trgm_idx", "search_words_trgm_idx"]
    # Nothing left for a search to scan outside the index proper: merging finds no page to merge.
    for index in indexes:
        assert await conn.fetchval("SELECT gin_clean_pending_list($1::regclass)", index) == 0
    # What the writer leaves pending between merges is kept small.
    options = dict(await conn.fetch("SELECT relname, reloptions FROM pg_class WHERE relname = ANY($1::text[])", indexes))
    assert all(options[i] == ["gin_pending_list_limit=256"] for i in indexes)


def test_reindex_command_rebuilds_both_indexes(database_url: str, tmp_path: Path) -> None:
    import asyncio

    async def seed() -> None:
        pg = PostgresBackend(database_url, min_size=1, max_size=2)
        async with pg:
            await pg.execute("TRUNCATE material_search, index_cursors, events, materials RESTART IDENTITY CASCADE")
            for name in ("Гипсокартон ГКЛВ 12,5мм", "Профнастил С21"):
                await create_material(pg, MaterialValues(name=name, unit="шт"))

    asyncio.run(seed())
    env = {**os.environ, "DATABASE_URL": database_url, "DATA_DIR": str(tmp_path), "EMBEDDER": "hash"}
    done = subprocess.run([sys.executable, "server.py", "reindex", "--quiet"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "reindexed: 2 text documents, 2 vectors" in done.stdout

    async def check() -> None:
        from backends.vectors_edge import EdgeIndex

        index = EdgeIndex(tmp_path / "vectors")
        await index.open(HashEmbedder().model_id, HashEmbedder().dim)
        try:
            assert await index.count() == 2
        finally:
            await index.close()

    asyncio.run(check())
