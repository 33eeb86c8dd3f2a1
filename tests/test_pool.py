"""Runs of a study in worker processes: results in the order given, errors raised here."""

from __future__ import annotations

import math
import multiprocessing
import time

import pytest

from inference.studies.pool import Job, run_jobs, usable_cpus


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_the_order_of_the_jobs(workers):
    jobs = [Job(f"sqrt {n}", math.sqrt, (n,)) for n in (9.0, 16.0, 2.0)]
    lines = []
    assert run_jobs(jobs, workers, threads=1, announce=lines.append) == [3.0, 4.0, math.sqrt(2)]
    assert len(lines) == 3
    if workers == 1:  # announced before each run, in order
        assert lines[0] == "run 1 of 3: sqrt 9.0"
    else:  # announced as each ends
        assert lines[-1].startswith("done 3 of 3: ")


def test_an_error_of_a_job_is_raised_here():
    jobs = [Job("fine", math.sqrt, (4.0,)), Job("bad", math.sqrt, (-1.0,))]
    with pytest.raises(ValueError, match="math domain error"):
        run_jobs(jobs, workers=2, threads=1)


def test_usable_cpus_is_at_least_one():
    assert usable_cpus() >= 1


def test_a_failed_job_stops_the_workers_still_running():
    jobs = [Job("slow", time.sleep, (600.0,)), Job("bad", math.sqrt, (-1.0,))]
    with pytest.raises(ValueError, match="math domain error"):
        run_jobs(jobs, workers=2, threads=1)
    assert multiprocessing.active_children() == []
