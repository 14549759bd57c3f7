"""Every Prometheus metric of the service, in one place (served on /metrics).

Metric objects are module globals, as prometheus-client expects. With several worker
processes (`serve --workers N`), `serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder
before any worker imports prometheus-client, each worker writes its values there, and
`render()` merges them: counters and histograms add up, gauges say per gauge how (the
`multiprocess_mode` below). Gauges are set by `sample_gauges()` on every scrape in the
answering process and every few seconds in each worker (backends.background), because
a gauge function cannot run in another process.

Fed by other features: RATE_LIMIT_REFUSALS (refusals of middleware.auth and
middleware.protection by reason, through `refused(reason)`), OPEN_SUBSCRIPTIONS (issue 6:
subscriptions, inc/dec per subscriber queue).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Request latency: most answers are a few ms (cache hits well under 1 ms), searches tens.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUND_TRIP_BUCKETS = (0, 1, 2, 3, 4, 5, 8, 12, 20, 50, 100)

# -- requests --------------------------------------------------------------------------------
REQUESTS = Counter("materials_requests", "HTTP requests by GraphQL operation name and outcome",
                   ["operation", "outcome"])
REQUEST_SECONDS = Histogram("materials_request_seconds", "Request latency by GraphQL operation name and outcome",
                            ["operation", "outcome"], buckets=LATENCY_BUCKETS)
RESOLVER_SECONDS = Histogram("materials_resolver_seconds",
                             "Top-level field resolution time (sampled requests only)", ["field"],
                             buckets=LATENCY_BUCKETS)
SQL_ROUND_TRIPS = Histogram("materials_sql_round_trips", "SQL round trips per GraphQL operation",
                            ["operation"], buckets=ROUND_TRIP_BUCKETS)

# -- cache (backends.cache, backends.warmup, middleware.response_cache) ------------------------
CACHE_LOOKUPS = Counter("materials_cache_lookups", "Cache lookups by level and result", ["level", "result"])
CACHE_REDIS_ERRORS = Counter("materials_cache_redis_errors", "Redis calls the cache gave up on")
CACHE_WARMED = Counter("materials_cache_warmed", "Keys the warm-up read back into the cache", ["kind"])

# -- backends --------------------------------------------------------------------------------
PG_POOL = Gauge("materials_pg_pool_connections", "asyncpg pool connections by pool and state "
                "(size, in_use, idle, max, waiting = acquires queued for a connection)",
                ["pool", "state"], multiprocess_mode="livesum")
PG_POOL_SATURATED = Counter("materials_pg_pool_saturated", "Times a pool was found with every connection "
                            "in use and callers waiting", ["pool"])
CIRCUIT_STATE = Gauge("materials_circuit_state", "Circuit breaker state by backend: 0 closed, 1 half-open, "
                      "2 open", ["backend"], multiprocess_mode="livemax")
CIRCUIT_OPENED = Counter("materials_circuit_opened", "Times a circuit breaker opened", ["backend"])
BACKEND_UP = Gauge("materials_backend_up", "Whether the last health check found the backend answering",
                   ["backend"], multiprocess_mode="livemin")
OUTBOX_LAG = Gauge("materials_outbox_lag_events", "Outbox events committed but not yet applied by this "
                   "instance's cache (latest event id - applied generation)", multiprocess_mode="livemax")
OUTBOX_APPLIED = Gauge("materials_outbox_applied_event", "The latest outbox event this instance applied",
                       multiprocess_mode="livemin")
IMPORT_ROWS = Counter("materials_import_rows", "Price-list rows imported, by outcome (stored, rejected)",
                      ["outcome"])

# -- fed by other features after merging ---------------------------------------------------------
RATE_LIMIT_REFUSALS = Counter("materials_rate_limit_refusals", "Requests refused before running, by reason "
                              "(rate limit, cost, depth, unauthenticated...)",
                              ["reason"])
OPEN_SUBSCRIPTIONS = Gauge("materials_open_subscriptions", "GraphQL subscriptions open on this instance",
                           multiprocess_mode="livesum")

CIRCUIT_STATES = {"closed": 0, "half-opened": 1, "opened": 2}


def refused(reason: str) -> None:
    """One request refused (middleware.auth.count_refusal calls this)."""
    RATE_LIMIT_REFUSALS.labels(reason).inc()


# (operation, outcome) -> its labelled children: `labels()` takes a lock and builds a key on
# every call. Operation labels are already bounded (middleware.observability keeps a fixed set).
_REQUEST_CHILDREN: dict[tuple[str, str], tuple[Any, Any, Any]] = {}


def record_request(operation: str, outcome: str, seconds: float, round_trips: int | None) -> None:
    children = _REQUEST_CHILDREN.get((operation, outcome))
    if children is None:
        children = (REQUESTS.labels(operation, outcome), REQUEST_SECONDS.labels(operation, outcome),
                    SQL_ROUND_TRIPS.labels(operation))
        if len(_REQUEST_CHILDREN) < 4096:
            _REQUEST_CHILDREN[(operation, outcome)] = children
    children[0].inc()
    children[1].observe(seconds)
    if round_trips is not None:
        children[2].observe(round_trips)


def record_pool(name: str, usage: dict[str, int]) -> None:
    for state in ("size", "in_use", "idle", "max", "waiting"):
        PG_POOL.labels(name, state).set(usage.get(state, 0))


# Callables that set gauges from live objects (pools, breakers, the event hub), by owner (an
# app's PostgresBackend: what one app registered leaves with it); server.py registers them.
# Each runs in the process that owns the objects.
_samplers: list[tuple[object, Callable[[], Any]]] = []


def add_sampler(sample: Callable[[], Any], owner: object = None) -> None:
    _samplers.append((owner, sample))


def remove_samplers(owner: object) -> None:
    _samplers[:] = [(o, s) for o, s in _samplers if o is not owner]


def sample_gauges() -> None:
    for _, sample in list(_samplers):
        try:
            sample()
        except Exception:  # a backend that is closed or down: its gauges keep their last value
            continue


def multiprocess_dir() -> str | None:
    """The folder prometheus-client's multiprocess mode writes to, when it is on.

    Read from the environment because prometheus-client itself reads it there at import
    time: `serve` sets it (server.py) before workers start.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render() -> tuple[bytes, str]:
    """The exposition text of every metric (merged over worker processes in multiprocess mode)."""
    sample_gauges()
    folder = multiprocess_dir()
    if folder is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_exited(pid: int) -> None:
    """Drops a stopped worker's live gauges (multiprocess mode only)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)


def sample_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """A sample's value from exposition text (tests and benches read /metrics with it)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(sample.value)
    return None


def sum_values(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of every sample `name` whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += float(sample.value)
    return total

