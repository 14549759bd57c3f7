"""Errors a client caused: raised by resolvers, shown to the client with a code and a field path."""

from __future__ import annotations

from collections.abc import Sequence

from graphql import GraphQLError


class InvalidArgument(GraphQLError):
    """An argument the client sent is unusable; the message says which and why."""

    def __init__(self, field: Sequence[str], message: str, code: str = "VALIDATION") -> None:
        super().__init__(
            f"{'.'.join(field)}: {message}",
            extensions={"code": code, "field": list(field)},
        )
