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
IW_RUNS = {  # the rows of the IW table, in order: key of iw.time_iw, label
    "handwritten": "hand-written, eager PyTorch",
    "handwritten_compiled": "hand-written, torch.compile",
    "jax_jit": "hand-written, JAX jax.jit",
    "library": "lvm-suite iw_log_marginal (default)",
    "library_compiled": "lvm-suite, compile=True",
    "library_eager": "lvm-suite, compile=False",
}
SVI_RUNS = {  # the rows of the SVI step table, in order: key of svi_step.time_steps, label
    "handwritten": "hand-written, eager PyTorch",
    "numpyro_jit": "NumPyro SVI, jax.jit",
    "library": "lvm-suite fit (default)",
    "library_eager": "lvm-suite fit, jit=False",
    "free_bits": "lvm-suite fit, free bits (default)",
    "free_bits_eager": "lvm-suite fit, free bits, jit=False",
}


def device() -> str:
    """What the benchmarks ran on: the processor, torch's threads, torch and jax."""
    import jax

    return (
        f"cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, jax {jax.__version__} on {jax.default_backend()}"
    )


def run(quick: bool) -> dict:
    repeats = 2 if quick else 3
    peak = matmul.matmul_gflops(threads=THREADS)
    iw_times = [iw.time_iw(k, repeats, THREADS) for k in (1000, 5000)]
    for row in iw_times:
        row["fraction_of_matmul_peak"] = {
            name: gflops / peak for name, gflops in row["gflops"].items()
        }
    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": device(),
        "matmul_gflops": peak,
        "iw_time": iw_times,
        "iw_chunks": iw.chunk_sweep(iw.CHUNK_BUDGETS, 1000, repeats, THREADS),
        "iw_profile": iw.where_time_goes(200, THREADS),
        "iw_pyro_paths": iw.pyro_paths(1000, THREADS),
        "iw_memory": iw.memory_sweep((1000, 10000) if quick else (1000, 10000, 100000), THREADS),
        "svi_step": [
            svi_step.time_steps(p, repeats=3 if quick else 5, threads=THREADS) for p in (1, 8)
        ],
        "ais": ais.run(quick, THREADS),
    }


def iw_table(rows: list[dict]) -> list[str]:
    """Seconds of each IW run at each K, its ratio to hand-written eager and its share of the
    matmul peak."""
    lines = [
        "IW estimate of log p(x), digits VAE (N=1797, 200-200 MLPs, 16-D latent), all points",
        f"{'':<37}" + "".join(f"{'K=' + str(row['num_samples']):>22}" for row in rows),
        f"{'':<37}" + f"{'seconds  ratio  %peak':>22}" * len(rows),
    ]
    for key, label in IW_RUNS.items():
        cells = [
            f"{row['seconds'][key]:>10.2f} {row['ratio'][key]:>5.2f}x "
            f"{100 * row['fraction_of_matmul_peak'][key]:>4.0f}%"
            for row in rows
        ]
        lines.append(f"{label:<37}" + "".join(cells))
    first = ", ".join(f"{row['first_compiled_call_seconds']:.1f} s" for row in rows)
    lines.append(f"(the first compile=True call, capturing and compiling: {first})")
    return lines


def chunk_table(rows: list[dict]) -> list[str]:
    lines = ["IW at K=1000 (compile=False) by chunk: particle-points, particles, seconds"]
    lines += [
        f"{row['particle_points']:>9} {row['chunk_size']:>5} {row['seconds']:>8.2f}" for row in rows
    ]
    return lines


def profile_table(report: dict) -> list[str]:
    lines = [
        f"Where the time goes, IW K={report['num_samples']} (torch profiler, self time, s)",
    ]
    for name, run in report["runs"].items():
        python = run["wall_seconds"] - run["operator_seconds"]
        lines.append(
            f"{name}: wall {run['wall_seconds']:.2f}, in operators {run['operator_seconds']:.2f}, "
            f"outside them {python:.2f}"
        )
        lines += [
            f"    {op['op']:<40} {op['seconds']:>6.2f} ({op['calls']} calls)"
            for op in run["top"][:5]
        ]
    return lines


def svi_table(rows: list[dict]) -> list[str]:
    lines = [
        "SVI step, batch 128, ms (ratio to hand-written eager)",
        f"{'':<37}" + "".join(f"{str(row['num_particles']) + ' particle(s)':>18}" for row in rows),
    ]
    for key, label in SVI_RUNS.items():
        cells = [f"{row['ms_per_step'][key]:>10.2f} ({row['ratio'][key]:.2f}x)" for row in rows]
        lines.append(f"{label:<37}" + "".join(cells))
    return lines


def memory_table(report: dict) -> list[str]:
    lines = [f"All K particles at once, {iw.PYRO_POINTS} points, K=1000:"]
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
    return lines


def table(report: dict) -> str:
    sections = [
        [f"{report['date']}, {report['device']}"],
        [f"float32 matmul: {report['matmul_gflops']:.0f} GFLOP/s"],
        iw_table(report["iw_time"]),
        chunk_table(report["iw_chunks"]),
        profile_table(report["iw_profile"]),
        memory_table(report),
        svi_table(report["svi_step"]),
    ]
    if "ais" in report:
        sections.append(ais.table(report["ais"]))
    return "\n\n".join("\n".join(lines) for lines in sections)


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
