"""The small error tree every backend translates its driver errors into, exactly once."""

from __future__ import annotations


class BackendError(Exception):
    """Base class of the errors a backend raises."""


class BackendStateError(BackendError):
    """A backend was used before `open()` or after `close()`."""


class BackendUnavailable(BackendError):
    """The engine behind a backend cannot be reached (down, refused, timed out)."""

    # graphql-core copies an original error's `extensions` into the GraphQLError it wraps it
    # in: a resolver that fails on an unavailable backend answers with code UNAVAILABLE.
    extensions = {"code": "UNAVAILABLE"}  # noqa: RUF012 (read-only, shared on purpose)


class MigrationError(BackendError):
    """A migration file failed to apply; the transaction was rolled back."""
