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
    job is raised here, and the workers are stopped.
    """
    results: list[Any] = []
    if workers <= 1 or len(jobs) <= 1:
        for index, job in enumerate(jobs):
            if announce is not None:
                announce(f"run {index + 1} of {len(jobs)}: {job.label}")
            results.append(job.function(*job.arguments))
        return results
    # multiprocessing's Pool: closed and joined when every job is done; terminated on a failed
    # job or Ctrl-C, so that neither waits for the runs still going.
    pool = get_context("spawn").Pool(
        min(workers, len(jobs)), initializer=_set_threads, initargs=(threads,)
    )
    try:
        tasks = [(index, job.function, job.arguments) for index, job in enumerate(jobs)]
        results = [None] * len(jobs)
        for done, (index, result, seconds) in enumerate(pool.imap_unordered(_timed, tasks), 1):
            results[index] = result
            if announce is not None:
                announce(f"done {done} of {len(jobs)}: {jobs[index].label} ({seconds:.0f} s)")
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return results


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _timed(task: tuple[int, Callable[..., Any], tuple]) -> tuple[int, Any, float]:
    index, function, arguments = task
    start = time.perf_counter()
    return index, function(*arguments), time.perf_counter() - start
