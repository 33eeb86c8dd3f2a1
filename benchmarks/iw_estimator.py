"""Benchmark: ``iw_log_marginal`` against a hand-written PyTorch importance sampler.

Both estimate log p(x) of the same LinearGaussian with the same AmortizedGaussian proposal on
scikit-learn's digits (N = 1797, D = 64), streaming particles in the same chunks. Each runs in
its own process so its peak resident memory can be read. Prints seconds, peak memory and the
ratio Pyro / hand-written.

    python -m benchmarks.iw_estimator --num-samples 100000
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch


def _pair():
    from guides import AmortizedGaussian
    from lvm_models import LinearGaussian, datasets

    torch.manual_seed(0)
    x = datasets.dequantized_digits(seed=0).x
    return LinearGaussian(64, 2), AmortizedGaussian(64, 2, hidden=(32,)), x


def _library(num_samples: int, chunk_size: int) -> float:
    from inference import iw_log_marginal

    model, guide, x = _pair()
    return iw_log_marginal(model, guide, x, num_samples=num_samples, chunk_size=chunk_size).mean


@torch.no_grad()
def _handwritten(num_samples: int, chunk_size: int) -> float:
    """The same estimate in plain PyTorch: encode, sample, score, running log-sum-exp."""
    model, guide, x = _pair()
    q = guide.distribution(x)  # batch (N,), event (k,)
    running_max = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
    running_sum = torch.zeros(x.shape[0], dtype=torch.float64)
    for start in range(0, num_samples, chunk_size):
        z = q.sample((min(chunk_size, num_samples - start),))  # (c, N, k)
        log_w = (
            model.prior().log_prob(z) + model.likelihood(z).log_prob(x) - q.log_prob(z)
        ).double()
        new_max = torch.maximum(running_max, log_w.max(0).values)
        running_sum = running_sum * (running_max - new_max).exp() + (log_w - new_max).exp().sum(0)
        running_max = new_max
    return (running_max + running_sum.log() - math.log(num_samples)).mean().item()


def _measure(which: str, num_samples: int, chunk_size: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    run = {"library": _library, "handwritten": _handwritten}[which]
    start = time.perf_counter()
    estimate = run(num_samples, chunk_size)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"which": which, "seconds": seconds, "peak_rss_mib": peak_mib, "estimate": estimate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=36)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["library", "handwritten"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_measure(args.worker, args.num_samples, args.chunk_size, args.threads)))
        return
    results = {}
    for which in ("handwritten", "library"):
        command = [sys.executable, "-m", "benchmarks.iw_estimator", "--worker", which]
        command += ["--num-samples", str(args.num_samples), "--chunk-size", str(args.chunk_size)]
        command += ["--threads", str(args.threads)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[which] = json.loads(output.strip().splitlines()[-1])
    base, ours = results["handwritten"], results["library"]
    print(f"IW log p(x) on digits (N=1797, D=64), K={args.num_samples}, chunk={args.chunk_size}")
    print(f"{'':<13}{'seconds':>10}{'peak RSS MiB':>14}{'mean log p(x)':>16}")
    for name, row in (("hand-written", base), ("lvm-suite", ours)):
        print(
            f"{name:<13}{row['seconds']:>10.1f}{row['peak_rss_mib']:>14.0f}{row['estimate']:>16.4f}"
        )
    print(f"time ratio lvm-suite / hand-written: {ours['seconds'] / base['seconds']:.2f}")


if __name__ == "__main__":
    main()
