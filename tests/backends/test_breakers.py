"""The circuit breaker's rules (a pure unit: the calls are plain coroutines that fail or not)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from backends.breakers import Breaker, CircuitOpen, GuardedEmbedder
from backends.embedder import HashEmbedder
from backends.errors import BackendUnavailable


class Flaky:
    """A backend call that fails while `down` is set, and counts how often it was really made."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("refused")
        return "ok"


async def test_opens_after_threshold_failures_fails_fast_then_recovers_by_itself() -> None:
    breaker = Breaker("unit", threshold=3, reset_s=0.2)
    backend = Flaky()
    assert await breaker.call(backend) == "ok" and breaker.state == "closed"
    backend.down = True
    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            await breaker.call(backend)
    assert breaker.state == "opened" and breaker.opened == 1
    calls = backend.calls
    for _ in range(10):  # refused at once: the backend is not asked
        with pytest.raises(CircuitOpen) as refused:
            await breaker.call(backend)
    assert backend.calls == calls
    assert isinstance(refused.value, BackendUnavailable) and "unit failed 3 times" in str(refused.value)
    assert refused.value.__traceback__ is not None and refused.value.__cause__ is None

    backend.down = False
    await asyncio.sleep(0.25)  # past reset_s: the next call tries the backend again
    assert breaker.state == "half-opened"
    assert await breaker.call(backend) == "ok"
    assert breaker.state == "closed"


async def test_a_failure_while_half_open_opens_it_again() -> None:
    breaker = Breaker("unit", threshold=1, reset_s=0.1)
    backend = Flaky()
    backend.down = True
    with pytest.raises(ConnectionRefusedError):
        await breaker.call(backend)
    await asyncio.sleep(0.15)
    with pytest.raises(ConnectionRefusedError):  # tried once more, failed
        await breaker.call(backend)
    assert breaker.state == "opened" and breaker.opened == 2
    with pytest.raises(CircuitOpen):
        await breaker.call(backend)


async def test_cancellations_and_callers_mistakes_do_not_count() -> None:
    breaker = Breaker("unit", threshold=1, reset_s=5)

    async def cancelled() -> None:
        raise asyncio.CancelledError

    async def mistaken() -> None:
        raise ValueError("bad argument")

    with pytest.raises(asyncio.CancelledError):
        await breaker.call(cancelled)
    with pytest.raises(ValueError):
        await breaker.call(mistaken)
    assert breaker.state == "closed"


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="threshold >= 1"):
        Breaker("unit", threshold=0)
    with pytest.raises(ValueError, match="reset_s > 0"):
        Breaker("unit", reset_s=0)


async def test_a_guarded_embedder_embeds_through_the_breaker() -> None:
    inner = HashEmbedder()
    guarded = GuardedEmbedder(inner, Breaker("embedder-unit", threshold=1, reset_s=5))
    vector = await guarded.query("цемент")
    assert np.allclose(vector, await inner.query("цемент"))
    assert guarded.model_id == inner.model_id and guarded.dim == inner.dim  # everything else passes through
