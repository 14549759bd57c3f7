"""The response cache: whole results of query operations, served as stored bytes.

A result is stored under the normalised document (printed from its AST, so spacing and
comments do not matter), the operation name, the variables and the caller's scope (its
credentials), with the tags of everything the execution read (loaders.cached and
`Context.depends_on`), in the same two-level cache as the loaders' rows. A write drops it
by tag like any entry (backends.freshness), on every instance. Only operations whose root
fields all read the catalog are stored; a result with errors, or one that used search
(its indexes follow the outbox asynchronously, no tag describes them), is not.
Responses carry `x-cache: hit` or `x-cache: miss`; GET and POST of one operation share an entry
(middleware.lean_queries).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from graphql import FieldNode, OperationDefinitionNode

from backends.cache import CacheView, count_lookup
from backends.warmup import response_member

CACHEABLE_ROOTS = frozenset({"material", "materials", "node", "categories", "units", "suppliers", "priceList",
                             "__typename"})
SCOPE_HEADERS = (b"authorization", b"x-api-key")
ANONYMOUS = hashlib.blake2b(digest_size=16).hexdigest()  # the scope of a caller without credentials


class ResponseCache:
    """Decides which operations may be stored and serves them through a request's CacheView."""

    def __init__(self, roots: frozenset[str] = CACHEABLE_ROOTS) -> None:
        self.roots = roots

    def answers(self, operation: OperationDefinitionNode) -> bool:
        return all(isinstance(s, FieldNode) and s.name.value in self.roots
                   for s in operation.selection_set.selections)

    @staticmethod
    def scope_of(scope: Any) -> str:
        """Who is asking, as far as results may differ: a digest of the caller's credentials."""
        digest = hashlib.blake2b(digest_size=16)
        for name, value in scope["headers"]:
            if name in SCOPE_HEADERS:
                digest.update(name + b"=" + value + b"\n")
        return digest.hexdigest()

    async def serve(self, view: CacheView, key: tuple[Any, ...],
                    execute: Callable[[], Awaitable[tuple[bytes, bool]]]) -> tuple[bytes, bool]:
        """(stored or fresh body, whether it was stored); `execute()` returns (body, storable)."""
        executed = False

        async def run(_: list[Any]) -> list[dict[str, Any]]:
            nonlocal executed
            executed = True
            body, storable = await execute()
            keep = storable and view.cacheable
            return [{"body": body, "tags": sorted(view.tags) if keep else None}]

        [stored] = await view.get_many("response", [key], run, _tags)
        count_lookup("response", "miss" if executed else "hit", 1)
        hot = view.cache.hot
        if hot is not None and key[3] == ANONYMOUS and stored["tags"] is not None:
            # Only what anyone may be served is warmed up again (never a caller's credentials).
            member = response_member(key[0], key[1], key[2])
            if member is not None:
                hot.count("response", (member,))
                if executed or not hot.indexed(member):
                    hot.index_response(member, stored["tags"])
        return stored["body"], not executed


def _tags(_: Any, value: dict[str, Any]) -> list[str] | None:
    return value["tags"]
