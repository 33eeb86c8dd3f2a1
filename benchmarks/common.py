"""What every benchmark shares: the digits VAE, timing by interleaved repeats, peak memory.

The model is the one the performance issue names: a VAE on scikit-learn's 1,797 binarised
digits (D = 64) with a 16-D latent and 200-200 MLPs in the encoder and the decoder. The
hand-written baselines reuse its very ``torch.nn`` layers, so both sides do the same FLOPs.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

LATENT_DIM = 16
HIDDEN = (200, 200)


def digits() -> torch.Tensor:
    from lvm_models import datasets

    return datasets.binarized_digits(seed=0).x  # (1797, 64)


def digits_vae(seed: int = 0):
    """The model and encoder, identically initialised for every caller."""
    from guides import AmortizedGaussian
    from lvm_models import BernoulliVAE

    torch.manual_seed(seed)
    return BernoulliVAE(64, LATENT_DIM, hidden=HIDDEN), AmortizedGaussian(
        64, LATENT_DIM, hidden=HIDDEN
    )


def mlp_flops(network: torch.nn.Sequential) -> int:
    """Multiply-adds x 2 of one pass of an MLP's linear layers on one input row."""
    return sum(
        2 * m.in_features * m.out_features for m in network if isinstance(m, torch.nn.Linear)
    )


def interleaved_seconds(
    runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each run, the runs alternating within every repeat so that
    a slow spell of the machine falls on all of them alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def resident_mib() -> float:
    """This process's resident memory now, in MiB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_resident_mib() -> float:
    """This process's peak resident memory so far, in MiB: ``VmHWM`` of its own address space.
    (``getrusage``'s ``ru_maxrss`` would carry over the parent's peak into a forked and exec'd
    worker, so every worker would report the launcher's size.)"""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("/proc/self/status has no VmHWM line")


def in_subprocess(module: str, *arguments: str) -> dict:
    """Run ``python -m module --worker ...`` and read the JSON line it prints: each worker gets
    a fresh process, so its peak memory is its own."""
    command = [sys.executable, "-m", module, "--worker", *arguments]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])
