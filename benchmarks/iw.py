"""Benchmark 1 and 3: the importance-weighted estimate of log p(x) on the digits VAE.

- time: ``iw_log_marginal`` against a hand-written PyTorch importance sampler (the same layers,
  the same chunks of particles, a running log-sum-exp), K = 1,000 and 5,000, all 1,797 points;
- compiled: ``iw_log_marginal`` with ``compile=True`` (``torch.compile``), ``False`` (eager) and
  ``None`` (the default) against the hand-written sampler, K = 1,000, and the seconds of the
  first compiled call, which captures and compiles;
- Pyro's own paths, ``vectorized_importance_weights`` and ``RenyiELBO(alpha=0)``, which hold
  all K particles at once: time and peak memory on 200 points at K = 1,000;
- memory: peak resident memory of ``iw_log_marginal`` at K = 1,000, 10,000 and 100,000.

    python -m benchmarks.iw                 # the whole benchmark, a table and JSON
    python -m benchmarks.iw --compiled-only # compiled against eager and hand-written, K=1000
"""

from __future__ import annotations

import argparse
import json
import math
import time

import pyro
import torch

from benchmarks.common import (
    digits,
    digits_vae,
    in_subprocess,
    interleaved_seconds,
    mlp_flops,
    peak_resident_mib,
    resident_mib,
)

PYRO_POINTS = 200  # Pyro's paths hold K x N particles: the digits at K = 1,000 would not fit


def default_chunk(num_data: int) -> int:
    """The library's default chunk of particles (``inference.estimators.bounds``), for both
    estimates; written out so that a hand-written worker never imports the library."""
    return max(1, 2**16 // num_data)


@torch.no_grad()
def handwritten_iw(model, guide, x: torch.Tensor, num_samples: int, chunk_size: int):
    """log (1/K) sum_k p(x, z_k) / q(z_k given x) per point, written out in plain PyTorch."""
    q = guide.distribution(x)  # Normal, batch (N,), event (k,)
    prior = model.prior()
    running_max = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
    running_sum = torch.zeros(x.shape[0], dtype=torch.float64)
    for start in range(0, num_samples, chunk_size):
        z = q.sample((min(chunk_size, num_samples - start),))  # (c, N, k)
        log_w = prior.log_prob(z) + model.likelihood(z).log_prob(x) - q.log_prob(z)  # (c, N)
        log_w = log_w.double()
        new_max = torch.maximum(running_max, log_w.max(0).values)
        running_sum = running_sum * (running_max - new_max).exp() + (log_w - new_max).exp().sum(0)
        running_max = new_max
    return running_max + running_sum.log() - math.log(num_samples)


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


def time_against_handwritten(num_samples: int, repeats: int, threads: int) -> dict:
    """Seconds of the library and the hand-written estimate, and the library's FLOP rate."""
    torch.set_num_threads(threads)
    model, guide = digits_vae()
    x = digits()
    chunk = default_chunk(x.shape[0])
    seconds = interleaved_seconds(
        {
            "handwritten": lambda: handwritten_iw(model, guide, x, num_samples, chunk),
            "library": lambda: library_iw(model, guide, x, num_samples, chunk),
        },
        repeats=repeats,
    )
    flops = x.shape[0] * (num_samples * mlp_flops(model.decoder) + mlp_flops(guide.encoder))
    return {
        "num_samples": num_samples,
        "num_data": x.shape[0],
        "chunk_size": chunk,
        "seconds": seconds,
        "ratio": seconds["library"] / seconds["handwritten"],
        "gflops": {name: flops / value / 1e9 for name, value in seconds.items()},
    }


def time_compiled(num_samples: int, repeats: int, threads: int) -> dict:
    """Seconds of the library compiled, eager and by default, next to the hand-written
    estimate; the first compiled call (capture and compilation) is timed on its own, first."""
    torch.set_num_threads(threads)
    model, guide = digits_vae()
    x = digits()
    chunk = default_chunk(x.shape[0])
    start = time.perf_counter()
    library_iw(model, guide, x, num_samples, chunk, compile=True)
    first_call = time.perf_counter() - start
    seconds = interleaved_seconds(
        {
            "handwritten": lambda: handwritten_iw(model, guide, x, num_samples, chunk),
            "eager": lambda: library_iw(model, guide, x, num_samples, chunk, compile=False),
            "compiled": lambda: library_iw(model, guide, x, num_samples, chunk, compile=True),
            "default": lambda: library_iw(model, guide, x, num_samples, chunk),
        },
        repeats=repeats,
    )
    return {
        "num_samples": num_samples,
        "num_data": x.shape[0],
        "chunk_size": chunk,
        "first_compiled_call_seconds": first_call,
        "seconds": seconds,
        "speedup": {
            "compiled_over_eager": seconds["eager"] / seconds["compiled"],
            "compiled_over_handwritten": seconds["handwritten"] / seconds["compiled"],
            "default_over_eager": seconds["eager"] / seconds["default"],
        },
    }


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
    parser.add_argument(
        "--compiled-only", action="store_true", help="only the compiled, eager and default rows"
    )
    args = parser.parse_args()
    if args.worker:
        which, num_samples, num_points, threads = args.worker
        print(json.dumps(_worker(which, int(num_samples), int(num_points), int(threads))))
        return
    if args.compiled_only:
        print(json.dumps(time_compiled(1000, args.repeats, args.threads), indent=2))
        return
    report = {
        "time": [time_against_handwritten(k, args.repeats, args.threads) for k in (1000, 5000)],
        "compiled": time_compiled(1000, args.repeats, args.threads),
        "pyro_paths": pyro_paths(1000, args.threads),
        "memory": memory_sweep(tuple(args.memory_sizes), args.threads),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
