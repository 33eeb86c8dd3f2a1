"""Benchmark 4: annealed importance sampling and BDMC on the digits VAE.

The digits VAE (16-D latent, 200-200 MLPs, :mod:`benchmarks.common`), trained briefly with
``fit``, on the first ``NUM_POINTS`` digits:

- the BDMC sandwich (:func:`inference.bdmc` on data simulated from the trained model,
  annealing from the prior as Wu et al. (2017) do) at two numbers of annealing steps: lower
  and upper estimates, their mean width, seconds;
- AIS from the trained encoder against the encoder's IW_K, K = 1,000 and K = the number of
  model evaluations AIS spent per point (same budget), with seconds.

Model evaluations are counted per data point: AIS evaluates model and guide with their
gradient C times (once per chain) per leapfrog step, pilot run included; IW_K evaluates them
K times, without gradient.

    python -m benchmarks.ais [--quick] [--threads 2] [--out figures.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.common import digits, digits_vae

NUM_POINTS = 50
NUM_CHAINS = 16
NUM_LEAPFROG = 5
TRAIN_STEPS = 3000
SANDWICH_STEPS = (100, 1000)
AIS_STEPS = 1000
IW_SAMPLES = 1000


def trained_vae(steps: int):
    """The digits VAE and encoder after ``steps`` SVI steps (batch 128, Adam 3e-3)."""
    from inference import fit

    model, guide = digits_vae()
    start = time.perf_counter()
    result = fit(
        model, guide, digits(), steps=steps, batch_size=128, lr=3e-3, seed=0, progress=False
    )
    return (
        model,
        guide,
        {"steps": steps, "seconds": time.perf_counter() - start, "final_loss": result.final_loss},
    )


def _summary(estimate) -> dict:
    return {
        "mean": estimate.mean,
        "stderr": estimate.stderr,
        "evaluations_per_point": estimate.num_samples * estimate.num_evaluations,
        "acceptance": estimate.acceptance.mean().item(),
    }


def sandwich(model, x: torch.Tensor, num_steps: int) -> dict:
    """BDMC from the prior on data simulated from the model: the width at ``num_steps``."""
    from inference import bdmc

    start = time.perf_counter()
    result = bdmc(
        model,
        None,
        x,
        num_steps=num_steps,
        num_chains=NUM_CHAINS,
        num_leapfrog=NUM_LEAPFROG,
        seed=0,
    )
    width = result.width
    return {
        "num_steps": num_steps,
        "seconds": time.perf_counter() - start,
        "lower": _summary(result.lower),
        "upper": _summary(result.upper),
        "width_mean": width.mean().item(),
        "width_max": width.max().item(),
    }


def ais_against_iw(model, guide, x: torch.Tensor, num_steps: int, iw_samples: int) -> dict:
    """AIS from the encoder against IW_K at K = ``iw_samples`` and at AIS's own budget."""
    from inference import ais_log_marginal, iw_log_marginal

    start = time.perf_counter()
    ais = ais_log_marginal(
        model,
        guide,
        x,
        num_steps=num_steps,
        num_chains=NUM_CHAINS,
        num_leapfrog=NUM_LEAPFROG,
        seed=0,
    )
    row = {"ais": {**_summary(ais), "num_steps": num_steps, "seconds": time.perf_counter() - start}}
    budget = ais.num_samples * ais.num_evaluations
    for name, k in (("iw", iw_samples), ("iw_same_budget", budget)):
        start = time.perf_counter()
        iw = iw_log_marginal(model, guide, x, num_samples=k, seed=0)
        row[name] = {
            "num_samples": k,
            "mean": iw.mean,
            "stderr": iw.stderr,
            "seconds": time.perf_counter() - start,
        }
    row["ais_minus_iw_same_budget"] = ais.mean - row["iw_same_budget"]["mean"]
    return row


def run(quick: bool = False, threads: int = 2) -> dict:
    """The whole benchmark: a JSON-ready dict."""
    torch.set_num_threads(threads)
    scale = 4 if quick else 1
    model, guide, training = trained_vae(TRAIN_STEPS // scale)
    x = digits()[:NUM_POINTS]
    return {
        "num_points": NUM_POINTS,
        "num_chains": NUM_CHAINS,
        "num_leapfrog": NUM_LEAPFROG,
        "training": training,
        "sandwich": [sandwich(model, x, steps // scale) for steps in SANDWICH_STEPS],
        "ais_vs_iw": ais_against_iw(model, guide, x, AIS_STEPS // scale, IW_SAMPLES),
    }


def table(report: dict) -> list[str]:
    """Lines for the terminal."""
    lines = [
        "AIS (from the encoder) and BDMC (from the prior), digits VAE",
        f"(first {report['num_points']} digits, {report['num_chains']} chains, "
        f"{report['num_leapfrog']} leapfrog steps; trained {report['training']['steps']} steps)",
        f"{'BDMC steps':>10} {'lower':>9} {'upper':>9} {'width':>7} {'evals/pt':>9} {'s':>7}",
    ]
    for row in report["sandwich"]:
        evaluations = row["lower"]["evaluations_per_point"] + row["upper"]["evaluations_per_point"]
        lines.append(
            f"{row['num_steps']:>10} {row['lower']['mean']:>9.2f} {row['upper']['mean']:>9.2f} "
            f"{row['width_mean']:>7.3f} {evaluations:>9} {row['seconds']:>7.1f}"
        )
    versus = report["ais_vs_iw"]
    lines.append(f"{'estimate':>18} {'log p(x)':>9} {'stderr':>7} {'evals/pt':>9} {'s':>7}")
    ais = versus["ais"]
    lines.append(
        f"{'AIS ' + str(ais['num_steps']) + ' steps':>18} {ais['mean']:>9.2f} "
        f"{ais['stderr']:>7.3f} {ais['evaluations_per_point']:>9} {ais['seconds']:>7.1f}"
    )
    for name in ("iw", "iw_same_budget"):
        iw = versus[name]
        lines.append(
            f"{'IW K=' + str(iw['num_samples']):>18} {iw['mean']:>9.2f} {iw['stderr']:>7.3f} "
            f"{iw['num_samples']:>9} {iw['seconds']:>7.1f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    report = run(args.quick, args.threads)
    print("\n".join(table(report)))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
