"""A bounded pool of in-flight API writes whose outcomes are handed back to the work loop.

The controller decides one pod at a time on one thread (decisions never race); what made it slow was waiting
for two API round trips per pod before deciding the next. With a pipeline the work loop puts its decision into
the view at once (as if the writes had landed), hands the writes to a writer thread and decides the next pod;
the writer's outcome comes back through ``deliver`` (the controller's event queue), so the view is still only
touched by the work loop. Every write keeps its precondition (resourceVersion, JSON-patch test) and its lease
bound, so a failed write only undoes its own assumption.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Outcome = Any  # what the job returned, or the exception it raised


class WritePipeline:
    """``capacity`` jobs run at once on writer threads; ``deliver`` gets a callable that the work loop runs."""

    def __init__(self, capacity: int, deliver: Callable[[Callable[[], None]], None]) -> None:
        if capacity < 1:
            raise ValueError(f"write pipeline capacity {capacity}: must be at least 1")
        self.capacity = capacity
        self._deliver = deliver
        self._pool = ThreadPoolExecutor(capacity, thread_name_prefix="writer")
        self.in_flight = 0  # read and written by the work loop only

    @property
    def full(self) -> bool:
        return self.in_flight >= self.capacity

    def submit(self, job: Callable[[], Any], done: Callable[[Outcome], None]) -> None:
        """Run ``job`` on a writer thread; ``done(outcome)`` then runs on the work loop."""
        self.in_flight += 1

        def landed(outcome: Outcome) -> None:
            self.in_flight -= 1
            done(outcome)

        def run() -> None:
            try:
                outcome = job()
            except BaseException as err:  # handed to the work loop, which decides what it means
                outcome = err
            self._deliver(lambda: landed(outcome))

        self._pool.submit(run)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class InlinePipeline:
    """Runs each job at once on the caller's thread (tests; and the order of effects of the unpipelined loop)."""

    capacity = 1
    in_flight = 0
    full = False

    def submit(self, job: Callable[[], Any], done: Callable[[Outcome], None]) -> None:
        try:
            outcome = job()
        except BaseException as err:
            outcome = err
        done(outcome)

    def close(self) -> None:
        return None
