"""Parallel DICOM decoding for a first ingest: one worker process per core by default.

A first ingest is CPU-bound (parse the header, decode the pixels, window, resize), so the
files are spread over worker processes: ``data.workers`` of them (0 = one per CPU core this
process may use; node config ``decode-workers`` at a hospital). Small jobs (fewer than
``MIN_PARALLEL_JOBS`` files) and ``workers = 1`` stay in this process.

Workers are forked, as PyTorch's DataLoader forks its workers, also inside a Flower
ClientApp: a worker only reads files and runs numpy/torch, never gRPC. (A fresh interpreter
per worker would cost seconds of imports, and at a site running as an unprivileged user the
interpreter's path may not even be executable.) The pool starts before any progress bar
thread. Each worker silences pydicom (its warnings can quote tag values) and uses one torch
thread. If the pool cannot start or a worker dies (an out-of-memory kill), the remaining
files are decoded here, with a warning: the ingest is slower, never lost.
Jobs never raise: they return a reason string instead.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_all_start_methods, get_context
from types import TracebackType
from typing import TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")

MIN_PARALLEL_JOBS = 16


def worker_count(setting: int) -> int:
    """Worker processes for a ``data.workers`` setting (0 = the cores this process may use)."""
    if setting > 0:
        return setting
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _start_method() -> str:
    return "fork" if "fork" in get_all_start_methods() else "spawn"


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
        """``function`` over ``jobs``, results in order (in workers when :meth:`parallel`).

        The pool is started here, before the caller iterates (and draws a progress bar).
        """
        if not self.parallel(len(jobs)):
            return map(function, jobs)
        chunk = max(1, min(16, len(jobs) // (4 * self.workers)))
        try:  # submitting forks the workers now, before the caller draws anything
            results = self._executor().map(function, jobs, chunksize=chunk)
        except Exception as problem:  # no processes at all: decode here
            self._give_up(f"could not start decoding workers ({type(problem).__name__})")
            return map(function, jobs)
        return self._collect(results, function, jobs)

    def _collect(
        self, results: Iterator[Result], function: Callable[[Job], Result], jobs: Sequence[Job]
    ) -> Iterator[Result]:
        done = 0
        try:
            for result in results:
                done += 1
                yield result
        except (BrokenProcessPool, OSError) as problem:
            what = "died (out of memory?)" if isinstance(problem, BrokenProcessPool) else "failed"
            self._give_up(
                f"a decoding worker process {what}; the remaining {len(jobs) - done} "
                "file(s) were decoded in the main process"
            )
            yield from map(function, jobs[done:])

    def _give_up(self, why: str) -> None:
        self._broken = True
        self.warnings.append(why)
        self.close()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=get_context(_start_method()), initializer=_quiet_worker
            )
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
