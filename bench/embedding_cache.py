"""A disk cache of passage embeddings for benchmarks (bench/results/, gitignored).

Embedding the 40,000-title relevance corpus takes minutes on 2 cores; the vectors only depend
on the model and the text, so a second run reads them back. Keys are the same stable hash the
server uses (model id + text), never Python's `hash()`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from backends.embedder import Embedder, SharedQueryVectors, stable_key
from backends.vectors import collection_name

RESULTS = Path(__file__).resolve().parent / "results"


class CachedPassages:
    """Wraps an embedder: passages come from the cache file when known, else from the model."""

    def __init__(self, inner: Embedder, path: Path | None = None) -> None:
        self.inner = inner
        self.model_id, self.dim = inner.model_id, inner.dim
        self.path = path or RESULTS / f"embeddings-{collection_name(inner.model_id)}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        self.computed = 0
        if self.path.exists():
            data = np.load(self.path)
            self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    def save(self) -> None:
        """Writes the cache, merged with what other processes saved since (two benches may
        share one model's file: a plain write would drop the other's vectors)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            if self.path.exists():
                data = np.load(self.path)
                for key, vector in zip(data["keys"].tolist(), data["vectors"], strict=True):
                    self.vectors.setdefault(key, vector)
            keys = list(self.vectors)
            tmp = self.path.with_name(self.path.stem + f".{os.getpid()}.tmp.npz")
            np.savez(tmp, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]) if keys
                     else np.empty((0, self.dim), dtype=np.float32))
            tmp.replace(self.path)

    async def passages(self, texts: Sequence[str]) -> np.ndarray:
        keys = [stable_key(self.model_id, t) for t in texts]
        missing = [i for i, k in enumerate(keys) if k not in self.vectors]
        if missing:
            fresh = await self.inner.passages([texts[i] for i in missing])
            for i, vector in zip(missing, fresh, strict=True):
                self.vectors[keys[i]] = vector
            self.computed += len(missing)
        return np.stack([self.vectors[k] for k in keys])

    async def query(self, text: str, shared: SharedQueryVectors | None = None) -> np.ndarray:
        return await self.inner.query(text, shared)

    def close(self) -> None:
        self.inner.close()
