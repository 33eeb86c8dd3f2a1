"""Benchmark 1 and 3: the importance-weighted estimate of log p(x) on the digits VAE.

- time: ``iw_log_marginal`` by default, compiled and eager, against hand-written importance
  samplers (the same layers, the same chunks of particles, a running log-sum-exp) in eager
  PyTorch, under ``torch.compile`` and in JAX under ``jax.jit`` (:mod:`benchmarks.baselines`),
  K = 1,000 and 5,000, all 1,797 points;
- chunks: the library's eager estimate at K = 1,000 with chunks of 2^12 to 2^18
  particle-points, the sweep that chose the default;
- Pyro's own paths, ``vectorized_importance_weights`` and ``RenyiELBO(alpha=0)``, which hold
  all K particles at once: time and peak memory on 200 points at K = 1,000;
- memory: peak resident memory of ``iw_log_marginal`` at K = 1,000, 10,000 and 100,000.

    python -m benchmarks.iw                 # the whole benchmark, a table and JSON
    python -m benchmarks.iw --time-only     # only the timing at K = 1,000
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import pyro
import torch

from benchmarks.baselines import compiled_runner, default_chunk, handwritten_iw, jax_runner
from benchmarks.common import (
    digits,
    digits_vae,
    in_subprocess,
    interleaved_seconds,
    mlp_flops,
    peak_resident_mib,
    resident_mib,
)

CHUNK_BUDGETS = (
    2**12,
    2**13,
    2**14,
    2**15,
    2**16,
    2**17,
    2**18,
)  # particle-points per chunk, swept
PYRO_POINTS = 200  # Pyro's paths hold K x N particles: the digits at K = 1,000 would not fit


def library_iw(model, guide, x: torch.Tensor, num_samples: int, chunk_size: int, compile=None):
    from inference import iw_log_marginal

    return iw_log_marginal(
        model, guide, x, num_samples=num_samples, chunk_size=chunk_size, compile=compile
    )


def pyro_vectorized(model, guide, x: torch.Tensor, num_samples: int):
    """Pyro's ``vectorized_importance_weights``: log weights summed over the points, (K,)."""
    from pyro.infer.importance import vectorized_importance_weights

    with torch.no_grad():
        return vectorized_importance_weights(
            model, guide, x, num_samples=num_samples, max_plate_nesting=1
        )[0]


def pyro_renyi(model, guide, x: torch.Tensor, num_samples: int) -> float:
    """Pyro's ``RenyiELBO(alpha=0)``: minus the IWAE bound summed over the points."""
    elbo = pyro.infer.RenyiELBO(
        alpha=0, num_particles=num_samples, vectorize_particles=True, max_plate_nesting=1
    )
    with torch.no_grad():
        return elbo.loss(model, guide, x)


def time_iw(num_samples: int, repeats: int, threads: int) -> dict:
    """Seconds of the library's estimate, by default, compiled (``compile=True``) and eager
    (``compile=False``), and of the hand-written baselines (eager, ``torch.compile``, JAX
    ``jit``), interleaved in one run; the FLOP rate of each. The compiled runs are warmed up
    first (capture and compilation), and that first call is timed on its own."""
    torch.set_num_threads(threads)
    model, guide = digits_vae()
    x = digits()
    chunk = default_chunk(x.shape[0])
    start = time.perf_counter()
    library_iw(model, guide, x, num_samples, chunk, compile=True)
    first_compiled_call = time.perf_counter() - start
    runs = {
        "handwritten": lambda: handwritten_iw(model, guide, x, num_samples, chunk),
        "handwritten_compiled": compiled_runner(model, guide, x, num_samples, chunk),
        "jax_jit": jax_runner(model, guide, x, num_samples, chunk),
        "library": lambda: library_iw(model, guide, x, num_samples, chunk),
        "library_compiled": lambda: library_iw(model, guide, x, num_samples, chunk, True),
        "library_eager": lambda: library_iw(model, guide, x, num_samples, chunk, False),
    }
    seconds = interleaved_seconds(runs, repeats=repeats)
    flops = x.shape[0] * (num_samples * mlp_flops(model.decoder) + mlp_flops(guide.encoder))
    return {
        "num_samples": num_samples,
        "num_data": x.shape[0],
        "chunk_size": chunk,
        "first_compiled_call_seconds": first_compiled_call,
        "seconds": seconds,
        "ratio": {name: value / seconds["handwritten"] for name, value in seconds.items()},
        "gflops": {name: flops / value / 1e9 for name, value in seconds.items()},
    }


def chunk_sweep(budgets: tuple[int, ...], num_samples: int, repeats: int, threads: int) -> list:
    """Seconds of the library's eager estimate with chunks of ``budget // N`` particles, for
    each budget of particle-points: the throughput that chooses the default chunk."""
    torch.set_num_threads(threads)
    model, guide = digits_vae()
    x = digits()
    runs = {
        budget: functools.partial(
            library_iw, model, guide, x, num_samples, max(1, budget // x.shape[0]), False
        )
        for budget in budgets
    }
    seconds = interleaved_seconds(runs, repeats=repeats)
    return [
        {"particle_points": budget, "chunk_size": max(1, budget // x.shape[0]), "seconds": value}
        for budget, value in seconds.items()
    ]


def where_time_goes(num_samples: int, threads: int, top: int = 8) -> dict:
    """Under the torch profiler, the seconds each operator takes (self time) in one estimate by
    the library (eager and compiled) and by the hand-written loop, the ``top`` costliest per
    run, and the wall time not spent in operators (Python: Pyro's handlers, the loop)."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(threads)
    model, guide = digits_vae()
    x = digits()
    chunk = default_chunk(x.shape[0])
    runs = {
        "handwritten": lambda: handwritten_iw(model, guide, x, num_samples, chunk),
        "library_eager": lambda: library_iw(model, guide, x, num_samples, chunk, False),
        "library_compiled": lambda: library_iw(model, guide, x, num_samples, chunk, True),
    }
    report = {}
    for name, run in runs.items():
        run()  # compiled: capture and compile outside the profile
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            start = time.perf_counter()
            run()
            wall = time.perf_counter() - start
        events = profiler.key_averages()
        operators = sum(event.self_cpu_time_total for event in events) / 1e6
        costliest = sorted(events, key=lambda event: -event.self_cpu_time_total)[:top]
        report[name] = {
            "wall_seconds": wall,
            "operator_seconds": operators,
            "top": [
                {"op": event.key, "seconds": event.self_cpu_time_total / 1e6, "calls": event.count}
                for event in costliest
            ],
        }
    return {"num_samples": num_samples, "runs": report}


def _worker(which: str, num_samples: int, num_points: int, threads: int) -> dict:
    """One estimate in this (fresh) process: seconds and memory."""
    torch.set_num_threads(threads)
    model, guide = digits_vae()
    x = digits()[:num_points]
    before = resident_mib()
    start = time.perf_counter()
    if which in ("library", "handwritten"):
        chunk = default_chunk(x.shape[0])
        run = library_iw if which == "library" else handwritten_iw
        run(model, guide, x, num_samples, chunk)
    else:
        {"pyro_vectorized": pyro_vectorized, "pyro_renyi": pyro_renyi}[which](
            model, guide, x, num_samples
        )
    seconds = time.perf_counter() - start
    peak = peak_resident_mib()
    return {
        "which": which,
        "num_samples": num_samples,
        "num_data": x.shape[0],
        "seconds": seconds,
        "peak_rss_mib": peak,
        "rss_growth_mib": peak - before,
    }


def pyro_paths(num_samples: int, threads: int) -> list[dict]:
    """Pyro's two all-particles-at-once paths next to ours, on PYRO_POINTS points."""
    return [
        in_subprocess(__name__, which, str(num_samples), str(PYRO_POINTS), str(threads))
        for which in ("library", "handwritten", "pyro_vectorized", "pyro_renyi")
    ]


def memory_sweep(sizes: tuple[int, ...], threads: int) -> list[dict]:
    """Peak memory of the library's estimate on all the digits, one fresh process per K."""
    return [
        in_subprocess(__name__, "library", str(k), str(len(digits())), str(threads)) for k in sizes
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--time-only", action="store_true", help="only the timing at K=1000")
    args = parser.parse_args()
    if args.worker:
        which, num_samples, num_points, threads = args.worker
        print(json.dumps(_worker(which, int(num_samples), int(num_points), int(threads))))
        return
    if args.time_only:
        print(json.dumps(time_iw(1000, args.repeats, args.threads), indent=2))
        return
    report = {
        "time": [time_iw(k, args.repeats, args.threads) for k in (1000, 5000)],
        "chunks": chunk_sweep(CHUNK_BUDGETS, 1000, args.repeats, args.threads),
        "profile": where_time_goes(200, args.threads),
        "pyro_paths": pyro_paths(1000, args.threads),
        "memory": memory_sweep(tuple(args.memory_sizes), args.threads),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
