"""Independent runs of a study, one after another or in worker processes.

The rows and remedies of ``lvm collapse`` are independent: each seeds its own data, its own
initial parameters and its own estimates, so its numbers do not depend on the order the runs
take or on the process they run in. :func:`run_jobs` runs them in ``workers`` processes
(started with ``spawn``: a fork of a process that has run torch's thread pools can hang),
each with ``threads`` intra-op threads, and returns the results in the order given.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any


@dataclass(frozen=True)
class Job:
    """A run: ``function(*arguments)``, a module-level function of picklable arguments
    (worker processes import it by name), described by ``label`` in the progress lines."""

    label: str
    function: Callable[..., Any]
    arguments: tuple


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    threads: int,
    announce: Callable[[str], object] | None = None,
) -> list[Any]:
    """Each job's result, in the order of ``jobs``.

    With ``workers`` 1 they run here, in order, ``announce`` called before each
    (``"run 3 of 33: 1c"``); with more, in that many worker processes of ``threads`` threads
    each, ``announce`` called as each ends (``"done 3 of 33: 1c (12 s)"``). An exception of a
    job is raised here, the other jobs cancelled.
    """
    results: list[Any] = []
    if workers <= 1 or len(jobs) <= 1:
        for index, job in enumerate(jobs):
            if announce is not None:
                announce(f"run {index + 1} of {len(jobs)}: {job.label}")
            results.append(job.function(*job.arguments))
        return results
    context = get_context("spawn")
    with ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=context, initializer=_set_threads, initargs=(threads,)
    ) as pool:
        futures = {
            pool.submit(_timed, job.function, job.arguments): index
            for index, job in enumerate(jobs)
        }
        results = [None] * len(jobs)
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                index = futures[future]
                results[index], seconds = future.result()
                if announce is not None:
                    announce(f"done {done} of {len(jobs)}: {jobs[index].label} ({seconds:.0f} s)")
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _timed(function: Callable[..., Any], arguments: tuple) -> tuple[Any, float]:
    start = time.perf_counter()
    return function(*arguments), time.perf_counter() - start
