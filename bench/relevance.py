"""Search relevance on real human labels: TEXT, VECTOR and HYBRID on the relevance dev set.

    python bench/relevance.py                       # ../shared/data/relevance-dev, e5 + embedded vector store
    python bench/relevance.py --data DIR --sweep    # also sweep the fusion parameters

It creates a fresh database `bench_relevance`, imports the corpus (40,000 product titles) as a
supplier price list through the normal import path (`backends.imports`), builds the indexes
with the normal indexers (text documents; vectors through the embedded store, or Qdrant at
$QDRANT_URL), then runs every query through `SearchService.search` in each mode and prints
nDCG@10, nDCG'@10 (unjudged products removed from the ranking first) and recall@50 (grade >= 1).
Gains are the grades (0, 1, 2), linear, as trec_eval computes nDCG.

The data is read where it lies and never copied into the repository. Passage embeddings are
cached in bench/results/ (gitignored) by model and text, so only the first run pays for them.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.catalog import MaterialFilterSpec  # noqa: E402
from backends.embedder import E5Embedder  # noqa: E402
from backends.imports import import_price_list  # noqa: E402
from backends.migrator import apply_migrations  # noqa: E402
from backends.postgres import PostgresBackend  # noqa: E402
from backends.search import SearchService, SearchTuning, with_tuning  # noqa: E402
from backends.search_index import TextIndexer, VectorIndexer  # noqa: E402
from bench.embedding_cache import CachedPassages  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "relevance-dev"
DATABASE = "bench_relevance"


def load_set(folder: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    with gzip.open(folder / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        corpus = {d["id"]: d["title"] for d in map(json.loads, fh)}
    queries = {d["query_id"]: d["query"] for d in map(json.loads, (folder / "queries.jsonl").open(encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for d in map(json.loads, (folder / "qrels.jsonl").open(encoding="utf-8")):
        qrels[d["query_id"]][d["product_id"]] = int(d["grade"])
    return corpus, queries, qrels


def dcg(gains: Sequence[int]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def metrics(ranking: Sequence[str], judged: dict[str, int]) -> tuple[float, float, float]:
    """(nDCG@10, nDCG'@10, recall@50) of a ranking of product ids against one query's labels."""
    ideal = dcg(sorted(judged.values(), reverse=True)[:10])
    if ideal == 0:
        return 0.0, 0.0, 0.0
    ndcg = dcg([judged.get(p, 0) for p in ranking[:10]]) / ideal
    condensed = [p for p in ranking if p in judged]
    ndcg_prime = dcg([judged[p] for p in condensed[:10]]) / ideal
    relevant = {p for p, g in judged.items() if g >= 1}
    recall = len(relevant & set(ranking[:50])) / len(relevant) if relevant else 0.0
    return ndcg, ndcg_prime, recall


def mean(values: Sequence[tuple[float, float, float]]) -> tuple[float, float, float]:
    n = len(values) or 1
    return tuple(sum(v[i] for v in values) / n for i in range(3))  # type: ignore[return-value]


async def fresh_database(server: str, name: str = DATABASE) -> str:
    admin = await asyncpg.connect(server.rstrip("/") + "/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return server.rstrip("/") + "/" + name


async def load_corpus(pg: PostgresBackend, corpus: dict[str, str]) -> tuple[dict[int, list[str]], float]:
    """Imports the titles as one price list (sku = product id); returns material id -> product ids."""
    async with pg.pool.acquire() as conn:
        await apply_migrations(conn)
        supplier = await conn.fetchval("INSERT INTO suppliers (name) VALUES ('Relevance corpus') RETURNING id")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.csv"
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["name", "sku", "unit", "unit_price"])
            for pid, title in corpus.items():
                writer.writerow([title, pid, "шт", "1"])
        started = time.perf_counter()
        result = await import_price_list(pg, supplier, path)
        seconds = time.perf_counter() - started
    async with pg.pool.acquire() as conn:
        await conn.execute("ANALYZE")  # as autovacuum soon would
    print(f"imported {result.row_count} rows ({result.rejected_count} rejected, "
          f"{result.materials_created} materials) in {seconds:.1f} s")
    products: dict[int, list[str]] = defaultdict(list)
    async with pg.pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, sku, name FROM materials WHERE deleted_at IS NULL")
    by_sku = {r["sku"]: r["id"] for r in rows if r["sku"]}
    by_name = {r["name"]: r["id"] for r in rows}
    for pid, title in corpus.items():
        # A product whose title another product already had was matched to that material.
        material_id = by_sku.get(pid) or by_name.get(title.strip())
        if material_id is not None:
            products[material_id].append(pid)
    return products, seconds


def expand(hits: Sequence[int], products: dict[int, list[str]]) -> list[str]:
    """Material ids to product ids (a title shared by several products is one material)."""
    out: list[str] = []
    for material_id in hits:
        out.extend(products.get(material_id, ()))
    return out


def open_index(data_dir: Path) -> Any:
    if os.environ.get("QDRANT_URL"):
        from backends.vectors import QdrantClientIndex

        return QdrantClientIndex(url=os.environ["QDRANT_URL"])
    from backends.vectors_edge import EdgeIndex

    return EdgeIndex(data_dir)


async def run(args: argparse.Namespace) -> None:
    corpus, queries, qrels = load_set(args.data)
    if args.limit:
        queries = dict(list(queries.items())[: args.limit])
    print(f"{len(corpus)} products, {len(queries)} queries, {sum(len(v) for v in qrels.values())} judgements")
    url = await fresh_database(args.database_url, args.db_name)
    pg = PostgresBackend(url, min_size=1, max_size=8)
    await pg.open()
    embedder = CachedPassages(E5Embedder())
    with tempfile.TemporaryDirectory() as vectors_dir:
        index = open_index(Path(vectors_dir))
        await index.open(embedder.model_id, embedder.dim)
        try:
            products, _ = await load_corpus(pg, corpus)
            started = time.perf_counter()
            documents = await TextIndexer(pg).rebuild()
            print(f"text index: {documents} documents in {time.perf_counter() - started:.1f} s")
            if args.modes == ["TEXT"]:
                await evaluate(SearchService(pg, None, None), queries, qrels, products, False, args.modes,
                               corpus if args.misses else None)
                return
            started = time.perf_counter()
            points = await VectorIndexer(pg, embedder, index, batch=512).rebuild()
            seconds = time.perf_counter() - started
            embedder.save()
            print(f"vector index: {points} points in {seconds:.1f} s "
                  f"({embedder.computed} embedded now, {points - embedder.computed} from the cache)")
            if hasattr(index, "optimize"):
                started = time.perf_counter()
                await index.optimize()
                print(f"HNSW build: {time.perf_counter() - started:.1f} s")
            service = SearchService(pg, embedder, index, SearchTuning())
            sides = await evaluate(service, queries, qrels, products, args.sweep, args.modes,
                                   corpus if args.misses else None)
            if args.sweep:
                sweep_fusion(service, sides, qrels, products)
        finally:
            await index.close()
            await pg.close()


async def evaluate(service: SearchService, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                   products: dict[int, list[str]], sweep: bool, modes: Sequence[str],
                   misses: dict[str, str] | None = None) -> dict[str, Any]:
    spec = MaterialFilterSpec()
    tuning = service.tuning
    per_mode: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    sides: dict[str, Any] = {}
    missed: list[str] = []
    started = time.perf_counter()
    for qid, text in queries.items():
        judged = qrels.get(qid, {})
        for mode in modes:
            outcome = await service.search(text, spec, mode, count=False)
            ranking = expand([h.material_id for h in outcome.hits], products)
            per_mode[mode].append(metrics(ranking, judged))
            if misses is not None and mode == modes[-1]:
                missed += await missed_products(service, text, outcome, ranking, judged, products, misses)
        if sweep:  # each side once, as search() reads them; the sweep fuses them again per setting
            vector, vector_text = await service.vector_side(text, spec, max(tuning.depth, tuning.vector_depth))
            sides[qid] = ((await service.text_side(text, spec, tuning.depth))[0], vector, vector_text)
    print(f"\n{len(queries)} queries x {len(modes)} modes in {time.perf_counter() - started:.1f} s "
          f"(fusion {tuning.fusion}: rank weight {tuning.rank_weight}, every-word bonus {tuning.every_word_bonus}; "
          f"text depth {tuning.depth}, vector depth {tuning.vector_depth}; "
          f"HYBRID feedback from the text side's first {tuning.feedback_k} hits, weight {tuning.feedback_weight})")
    print(f"{'mode':<8} {'nDCG@10':>8} {'nDCG_@10':>9} {'R@50':>7}")
    for mode, values in per_mode.items():
        n, n_prime, r = mean(values)
        print(f"{mode:<8} {n:8.4f} {n_prime:9.4f} {r:7.4f}")
    print("floor (BM25 over titles):   0.378     0.715  0.671;  target HYBRID: nDCG'@10 >= 0.79, R@50 >= 0.74")
    if missed:
        print(f"\nrelevant products the {modes[-1]} top 50 misses ([text list position, vector list position]):")
        print("\n".join(missed))
    return sides


async def missed_products(service: SearchService, text: str, outcome: Any, ranking: list[str],
                          judged: dict[str, int], products: dict[int, list[str]], titles: dict[str, str]) -> list[str]:
    """The relevant products (grade >= 1) outside the top 50, each with its position in the text
    side's list and in the vector side's list ('-': not in it)."""
    top = set(ranking[:50])
    lost = [p for p, g in judged.items() if g >= 1 and p not in top]
    if not lost:
        return []
    spec, depth = MaterialFilterSpec(), service.tuning.depth
    rewrite = await service.rewrite(text)
    sides: list[dict[str, int]] = []
    for side in ("text", "vector"):
        if outcome.mode not in ("HYBRID", side.upper()):
            sides.append({})
            continue
        if side == "text":
            hits = (await service.text_side(text, spec, depth, rewrite))[0]
        else:
            hits = (await service.vector_side(text, spec, max(depth, service.tuning.vector_depth), rewrite))[0]
        order = expand([i for i, _ in hits], products)
        sides.append({p: i + 1 for i, p in reversed(list(enumerate(order)))})
    out = [f"## {text!r}" + (f" (corrected: {outcome.corrected!r})" if outcome.corrected else "")]
    for p in lost:
        out.append(f"   grade {judged[p]} [{sides[0].get(p, '-')}, {sides[1].get(p, '-')}] {titles[p]}")
    return out


def sweep_fusion(service: SearchService, sides: dict[str, Any], qrels: dict[str, dict[str, int]],
                 products: dict[int, list[str]]) -> None:
    """The fusion settings around the defaults, on the sides read once (the service's own `_fuse`)."""
    settings: list[dict[str, Any]] = []
    for k in (10, 30, 60):
        for vw in (0.75, 1.0, 1.5):
            settings.append({"fusion": "rrf", "k": k, "vector_weight": vw})
    for rank_weight in (0.25, 0.5, 1.0, 1.5, 2.0):
        for bonus in (0.0, 0.02, 0.05):
            settings.append({"fusion": "scores", "rank_weight": rank_weight, "every_word_bonus": bonus})
    results = []
    for changes in settings:
        fuse = with_tuning(service, **changes)._fuse
        values = [metrics(expand([h.material_id for h in fuse(text, vector, vector_text)], products),
                          qrels.get(qid, {}))
                  for qid, (text, vector, vector_text) in sides.items()]
        results.append((mean(values), " ".join(f"{k}={v}" for k, v in changes.items())))
    results.sort(key=lambda r: -(r[0][1] + r[0][2]))
    print("\nfusion sweep (best 12 by nDCG'@10 + R@50): nDCG@10 nDCG'@10 R@50")
    for (n, n_prime, r), label in results[:12]:
        print(f"  {n:.3f} {n_prime:.3f} {r:.3f}  {label}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with corpus/queries/qrels")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--db-name", default=DATABASE, help=f"database to (re)create (default {DATABASE})")
    parser.add_argument("--limit", type=int, default=0, help="only the first N queries")
    parser.add_argument("--modes", type=lambda v: v.upper().split(","), default=["TEXT", "VECTOR", "HYBRID"],
                        help="comma-separated modes (default TEXT,VECTOR,HYBRID; TEXT alone skips the vectors)")
    parser.add_argument("--sweep", action="store_true", help="also sweep the fusion parameters")
    parser.add_argument("--misses", action="store_true",
                        help="print the relevant products the last mode's top 50 misses, with each side's position")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
