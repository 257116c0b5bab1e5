"""Parallel DICOM decoding for a first ingest: one worker process per core by default.

A first ingest is CPU-bound (parse the header, decode the pixels, window, resize), so the
files are spread over worker processes: ``data.workers`` of them (0 = one per CPU core this
process may use; node config ``decode-workers`` at a hospital). Small jobs (fewer than
``MIN_PARALLEL_JOBS`` files) and ``workers = 1`` stay in this process.

Workers are forked when that is safe (no other thread and no gRPC in this process, as in
``medfed site check``), else started through a fork server that has imported the decoder
once (inside a Flower ClientApp, whose gRPC threads must not be forked). Each worker
silences pydicom (its warnings can quote tag values) and uses one torch thread. If a
worker dies (an out-of-memory kill), the remaining files are decoded here, with a warning:
the ingest is slower, never lost. Jobs never raise: they return a reason string instead.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from types import TracebackType
from typing import TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")

MIN_PARALLEL_JOBS = 16
_PRELOAD = ["common.data.volumes"]


def worker_count(setting: int) -> int:
    """Worker processes for a ``data.workers`` setting (0 = the cores this process may use)."""
    if setting > 0:
        return setting
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _start_method() -> str:
    if "grpc" in sys.modules or threading.active_count() > 1:
        return "forkserver"
    return "fork"


def _quiet_worker() -> None:
    """Worker start-up: no pydicom warnings or logs (PHI), one torch thread per process."""
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)


class DecodeWorkers:
    """A lazily started process pool; ``map`` falls back to this process when it is not worth it."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.warnings: list[str] = []
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False

    def __enter__(self) -> DecodeWorkers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def parallel(self, jobs: int) -> bool:
        """Whether ``jobs`` jobs go to worker processes."""
        return self.workers > 1 and jobs >= MIN_PARALLEL_JOBS and not self._broken

    def map(self, function: Callable[[Job], Result], jobs: Sequence[Job]) -> Iterator[Result]:
        """``function`` over ``jobs``, results in order (in workers when :meth:`parallel`)."""
        if not self.parallel(len(jobs)):
            yield from map(function, jobs)
            return
        done = 0
        chunk = max(1, min(16, len(jobs) // (4 * self.workers)))
        try:
            for result in self._executor().map(function, jobs, chunksize=chunk):
                done += 1
                yield result
        except BrokenProcessPool:
            self._broken = True
            self.warnings.append(
                "a decoding worker process died (out of memory?); the remaining "
                f"{len(jobs) - done} file(s) were decoded in the main process"
            )
            self.close()
            yield from map(function, jobs[done:])

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = get_context(_start_method())
            if context.get_start_method() == "forkserver":
                context.set_forkserver_preload(_PRELOAD)
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_quiet_worker
            )
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
