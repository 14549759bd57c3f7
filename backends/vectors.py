"""The vector index: one narrow interface, two adapters.

- `QdrantClientIndex`: `qdrant-client` against a Qdrant server (`QDRANT_URL`, production) or
  its local mode (`:memory:` or a path; tests). Local mode is an exact scan in Python that
  never yields to the event loop, so every call runs in a worker thread.
- `EdgeIndex` (backends.vectors_edge): `qdrant-edge-py`, the Qdrant engine in-process, the
  embedded default in DATA_DIR.

Points are materials: the id is the material id, the payload holds what search filters on
(category path, unit, supplier ids, best current RUB price) and the model that made the
vector. One collection per model, so a model change starts an empty collection and the
indexer rebuilds it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

MAX_POINT_ID = 2**63 - 1


class VectorIndexError(RuntimeError):
    """The vector store refused or failed an operation."""


@dataclass(frozen=True)
class VectorPayload:
    category_path: tuple[int, ...] = ()
    unit: str | None = None
    supplier_ids: tuple[int, ...] = ()
    best_price: float | None = None

    def as_dict(self, model_id: str) -> dict[str, Any]:
        return {
            "category_path": list(self.category_path),
            "unit": self.unit,
            "supplier_ids": list(self.supplier_ids),
            "best_price": self.best_price,
            "model": model_id,
        }


@dataclass(frozen=True)
class VectorPoint:
    id: int
    vector: np.ndarray
    payload: VectorPayload = field(default_factory=VectorPayload)


@dataclass(frozen=True)
class VectorFilter:
    """The part of MaterialFilter a vector store can apply itself; PostgreSQL re-checks all of it."""

    category_id: int | None = None  # with subcategories: matches points whose path holds it
    unit: str | None = None  # a unit code (aliases are resolved before)
    supplier_id: int | None = None
    price_min: float | None = None
    price_max: float | None = None

    @property
    def empty(self) -> bool:
        return self == VectorFilter()


def check_point_id(point_id: Any) -> int:
    """Material ids as Qdrant ids: positive 64-bit integers (local mode would accept anything)."""
    if isinstance(point_id, bool) or not isinstance(point_id, (int, np.integer)):
        raise VectorIndexError(f"point id must be an integer, got {point_id!r}")
    value = int(point_id)
    if not 0 < value <= MAX_POINT_ID:
        raise VectorIndexError(f"point id must be between 1 and {MAX_POINT_ID}, got {value}")
    return value


def collection_name(model_id: str) -> str:
    """`materials__<model>` with the model id reduced to characters every store accepts."""
    return "materials__" + re.sub(r"[^a-zA-Z0-9_]+", "_", model_id).strip("_").lower()


class VectorIndex(Protocol):
    """What search and the indexer need from a vector store."""

    kind: str

    async def open(self, model_id: str, dim: int) -> None: ...

    async def close(self) -> None: ...

    async def upsert(self, points: Sequence[VectorPoint]) -> None: ...

    async def set_payloads(self, payloads: Sequence[tuple[int, VectorPayload]]) -> None: ...

    async def delete(self, ids: Sequence[int]) -> None: ...

    async def search(self, vector: np.ndarray, flt: VectorFilter, limit: int,
                     exclude: Sequence[int] = ()) -> list[tuple[int, float]]: ...

    async def vector_of(self, point_id: int) -> np.ndarray | None: ...

    async def vectors_of(self, point_ids: Sequence[int]) -> dict[int, np.ndarray]: ...

    async def count(self) -> int: ...

    async def clear(self) -> None: ...


class QdrantClientIndex:
    """qdrant-client: a Qdrant server when given a URL, else local mode (`:memory:` or a path)."""

    kind = "qdrant"

    def __init__(self, url: str | None = None, *, location: str | None = None, path: str | None = None,
                 timeout: float = 5.0) -> None:
        self.url, self.location, self.path, self.timeout = url, location, path, timeout
        self._client: Any = None
        self.collection = ""
        self.model_id = ""
        self.dim = 0

    @property
    def is_open(self) -> bool:
        """A client is open (a server's own outage shows only when a call fails)."""
        return self._client is not None

    @property
    def local(self) -> bool:
        return self.url is None

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # Local mode computes in Python without awaiting: a thread keeps the loop (and
        # timeouts) alive. The server client is thread-safe for these calls too.
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except VectorIndexError:
            raise
        except Exception as exc:
            raise VectorIndexError(f"qdrant: {exc}") from exc

    async def open(self, model_id: str, dim: int) -> None:
        from qdrant_client import QdrantClient, models

        if self._client is None:
            if self.url:
                self._client = QdrantClient(url=self.url, timeout=int(self.timeout) or 1)
            elif self.path:
                self._client = QdrantClient(path=self.path)
            else:
                self._client = QdrantClient(location=self.location or ":memory:")
        self.model_id, self.dim, self.collection = model_id, dim, collection_name(model_id)
        client = self._client
        if not await self._call(client.collection_exists, self.collection):
            await self._call(
                client.create_collection, self.collection,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
            )
            if not self.local:  # local mode has no payload indexes (and says so in a warning)
                for name, schema in (("category_path", models.PayloadSchemaType.INTEGER),
                                     ("unit", models.PayloadSchemaType.KEYWORD),
                                     ("supplier_ids", models.PayloadSchemaType.INTEGER),
                                     ("best_price", models.PayloadSchemaType.FLOAT)):
                    await self._call(client.create_payload_index, self.collection, name, field_schema=schema)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)

    def _require(self) -> Any:
        if self._client is None:
            raise VectorIndexError("the vector index is closed")
        return self._client

    async def upsert(self, points: Sequence[VectorPoint]) -> None:
        from qdrant_client import models

        client = self._require()
        structs = []
        for point in points:
            vector = np.asarray(point.vector, dtype=np.float32)
            if vector.shape != (self.dim,):
                raise VectorIndexError(f"point {point.id}: vector has shape {vector.shape}, expected ({self.dim},)")
            structs.append(models.PointStruct(id=check_point_id(point.id), vector=vector.tolist(),
                                              payload=point.payload.as_dict(self.model_id)))
        if structs:
            await self._call(client.upsert, self.collection, points=structs, wait=True)

    async def set_payloads(self, payloads: Sequence[tuple[int, VectorPayload]]) -> None:
        from qdrant_client import models

        client = self._require()
        operations = [
            models.SetPayloadOperation(set_payload=models.SetPayload(
                payload=payload.as_dict(self.model_id), points=[check_point_id(point_id)]))
            for point_id, payload in payloads
        ]
        if operations:
            await self._call(client.batch_update_points, self.collection, update_operations=operations, wait=True)

    async def delete(self, ids: Sequence[int]) -> None:
        from qdrant_client import models

        client = self._require()
        checked = [check_point_id(i) for i in ids]
        if checked:
            await self._call(client.delete, self.collection,
                             points_selector=models.PointIdsList(points=checked), wait=True)

    def _filter(self, flt: VectorFilter, exclude: Sequence[int]) -> Any:
        from qdrant_client import models

        must: list[Any] = []
        if flt.category_id is not None:
            must.append(models.FieldCondition(key="category_path", match=models.MatchValue(value=flt.category_id)))
        if flt.unit is not None:
            must.append(models.FieldCondition(key="unit", match=models.MatchValue(value=flt.unit)))
        if flt.supplier_id is not None:
            must.append(models.FieldCondition(key="supplier_ids", match=models.MatchValue(value=flt.supplier_id)))
        if flt.price_min is not None or flt.price_max is not None:
            must.append(models.FieldCondition(key="best_price", range=models.Range(gte=flt.price_min,
                                                                                    lte=flt.price_max)))
        must_not = [models.HasIdCondition(has_id=[check_point_id(i) for i in exclude])] if exclude else []
        if not must and not must_not:
            return None
        return models.Filter(must=must or None, must_not=must_not or None)

    async def search(self, vector: np.ndarray, flt: VectorFilter, limit: int,
                     exclude: Sequence[int] = ()) -> list[tuple[int, float]]:
        client = self._require()
        response = await self._call(client.query_points, self.collection,
                                    query=np.asarray(vector, dtype=np.float32).tolist(),
                                    query_filter=self._filter(flt, exclude), limit=limit,
                                    with_payload=False, with_vectors=False)
        return [(int(p.id), float(p.score)) for p in response.points]

    async def vector_of(self, point_id: int) -> np.ndarray | None:
        client = self._require()
        records = await self._call(client.retrieve, self.collection, ids=[check_point_id(point_id)],
                                   with_payload=False, with_vectors=True)
        if not records:
            return None
        return np.asarray(records[0].vector, dtype=np.float32)

    async def vectors_of(self, point_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored vectors of those of `point_ids` the index holds, in one call."""
        client = self._require()
        if not point_ids:
            return {}
        records = await self._call(client.retrieve, self.collection, ids=[check_point_id(i) for i in point_ids],
                                   with_payload=False, with_vectors=True)
        return {int(r.id): np.asarray(r.vector, dtype=np.float32) for r in records}

    async def count(self) -> int:
        client = self._require()
        return int((await self._call(client.count, self.collection, exact=True)).count)

    async def clear(self) -> None:
        client = self._require()
        await self._call(client.delete_collection, self.collection)
        await self.open(self.model_id, self.dim)
