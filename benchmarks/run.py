"""Every benchmark in one run: a table on the terminal and the figures as JSON.

    python -m benchmarks.run [--out benchmarks/results.json] [--quick]

Hand-written PyTorch is measured in the same run as the library, so every ratio compares
like with like on whatever machine runs it. ``--quick`` skips the K = 100,000 memory point
(about ten minutes on 2 cores) and uses fewer repeats.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from benchmarks import ais, iw, matmul, svi_step

THREADS = 2  # the machines this project runs on have 2 cores


def run(quick: bool) -> dict:
    repeats = 2 if quick else 3
    peak = matmul.matmul_gflops(threads=THREADS)
    iw_times = [iw.time_against_handwritten(k, repeats, THREADS) for k in (1000, 5000)]
    for row in iw_times:
        row["fraction_of_matmul_peak"] = {
            name: gflops / peak for name, gflops in row["gflops"].items()
        }
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}",
        "matmul_gflops": peak,
        "iw_time": iw_times,
        "iw_compiled": iw.time_compiled(1000, repeats, THREADS),
        "iw_pyro_paths": iw.pyro_paths(1000, THREADS),
        "iw_memory": iw.memory_sweep((1000, 10000) if quick else (1000, 10000, 100000), THREADS),
        "svi_step": [
            svi_step.time_steps(p, repeats=3 if quick else 5, threads=THREADS) for p in (1, 8)
        ],
        "ais": ais.run(quick, THREADS),
    }


def table(report: dict) -> str:
    lines = [
        f"{report['date']}, {report['machine']}",
        f"float32 matmul: {report['matmul_gflops']:.0f} GFLOP/s",
        "",
        "IW estimate of log p(x), digits VAE (N=1797, 200-200 MLPs, 16-D latent)",
        f"{'K':>7} {'hand-written s':>15} {'lvm-suite s':>12} {'ratio':>6} "
        f"{'% of matmul peak (hand / ours)':>31}",
    ]
    for row in report["iw_time"]:
        share = row["fraction_of_matmul_peak"]
        lines.append(
            f"{row['num_samples']:>7} {row['seconds']['handwritten']:>15.2f} "
            f"{row['seconds']['library']:>12.2f} {row['ratio']:>6.2f} "
            f"{100 * share['handwritten']:>20.0f} / {100 * share['library']:.0f}"
        )
    if "iw_compiled" in report:
        compiled = report["iw_compiled"]
        seconds, speedup = compiled["seconds"], compiled["speedup"]
        lines += [
            "",
            f"iw_log_marginal(compile=...), K={compiled['num_samples']} (seconds; first "
            f"compiled call {compiled['first_compiled_call_seconds']:.1f})",
            f"hand-written {seconds['handwritten']:.2f}, eager {seconds['eager']:.2f}, "
            f"compiled {seconds['compiled']:.2f}, default {seconds['default']:.2f}; compiled is "
            f"{speedup['compiled_over_eager']:.2f}x eager, "
            f"{speedup['compiled_over_handwritten']:.2f}x hand-written",
        ]
    lines += ["", f"All K particles at once, {iw.PYRO_POINTS} points, K=1000:"]
    lines.append(f"{'path':<18} {'seconds':>8} {'peak RSS MiB':>13} {'growth MiB':>11}")
    for row in report["iw_pyro_paths"]:
        lines.append(
            f"{row['which']:<18} {row['seconds']:>8.2f} {row['peak_rss_mib']:>13.0f} "
            f"{row['rss_growth_mib']:>11.0f}"
        )
    lines += ["", "Peak memory of iw_log_marginal on all 1797 digits:"]
    lines.append(f"{'K':>7} {'seconds':>8} {'peak RSS MiB':>13} {'growth MiB':>11}")
    for row in report["iw_memory"]:
        lines.append(
            f"{row['num_samples']:>7} {row['seconds']:>8.1f} {row['peak_rss_mib']:>13.0f} "
            f"{row['rss_growth_mib']:>11.0f}"
        )
    lines += ["", "SVI step, batch 128 (ms; ratio to hand-written)"]
    for row in report["svi_step"]:
        ms, ratio = row["ms_per_step"], row["ratio"]
        lines.append(
            f"{row['num_particles']} particle(s): hand-written {ms['handwritten']:.2f}, "
            f"Trace_ELBO {ms['trace_elbo']:.2f} ({ratio['trace_elbo']:.2f}x), "
            f"jit=True {ms['jit_trace_elbo']:.2f} ({ratio['jit_trace_elbo']:.2f}x)"
        )
    if "ais" in report:
        lines += ["", *ais.table(report["ais"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    report = run(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
