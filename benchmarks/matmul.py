"""Benchmark 4: the machine's float32 matmul throughput, the yardstick for the IW estimate."""

from __future__ import annotations

import torch

from benchmarks.common import interleaved_seconds


def matmul_gflops(size: int = 2048, threads: int = 2, repeats: int = 10) -> float:
    """GFLOP/s of a (size x size) @ (size x size) float32 product, median of ``repeats``."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    seconds = interleaved_seconds({"mm": lambda: a @ b}, repeats=repeats, warmup=2)["mm"]
    return 2 * size**3 / seconds / 1e9


if __name__ == "__main__":
    print(f"{matmul_gflops():.1f} GFLOP/s (float32, 2 threads)")
