"""A job that runs in the background of a server process, as one task of the running loop."""

from __future__ import annotations

import abc
import asyncio
import contextlib


class BackgroundJob(abc.ABC):
    """`start()` runs `_run()` as a task named `task_name`; `stop()` cancels it and waits for it.

    Subclasses implement `_run()` (a loop that ends only when cancelled) and call
    `super().__init__()`."""

    task_name = "background"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    @abc.abstractmethod
    async def _run(self) -> None:
        """The job: a loop that ends only when cancelled."""

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{type(self).__name__}.start() called twice")
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
