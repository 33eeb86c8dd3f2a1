"""The sweeps of ``lvm frontier``, on correlated Gaussian data (D = 8):

- probabilistic PCA with its noise held at sigma = 0.5 and a linear encoder, whose optimum
  :func:`~inference.studies.frontier.linear_beta_optimum` gives in closed form (full-batch
  training);
- the full-covariance Gaussian VAE, powerful for these data: the ELBO's optimum ignores z,
  and beta < 1 forces it into use; the other remedies of
  :data:`~inference.studies.remedies.REMEDIES` are placed beside the sweep
  (:func:`~inference.studies.frontier.remedy_rows`).

Each of the three parts (the two sweeps, the remedies) is a function of ``quick`` and the
seed alone, so that :func:`built_in_sweeps` can run them as jobs of worker processes
(:mod:`inference.studies.pool`) with the same numbers as here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from guides import AmortizedGaussian
from inference.studies.frontier import (
    LINEAR_NOISE_SCALE,
    FrontierRow,
    RateDistortion,
    rate_distortion,
    remedy_rows,
)
from inference.studies.pool import Job, run_jobs
from inference.studies.remedies import REMEDIES
from lvm_models import GaussianVAE, LinearGaussian, datasets

NAMES = ("pPCA, noise fixed (linear oracle)", "full-covariance Gaussian VAE")
EVAL_POINTS = 256
Announce = Callable[[str], object] | None


def built_in_sweeps(
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    announce: Announce = None,
    workers: int = 1,
    threads: int = 1,
) -> dict[str, RateDistortion]:
    """The two sweeps, by name (see the module's text), the VAE's with its remedies.

    ``quick``: a smoke test (three betas, short training) that checks the pipeline runs; its
    figures need not show the full sweep's conclusions. With ``workers`` 1 ``announce`` is
    called with each sweep's header (``"sweep 1 of 2: pPCA, noise fixed (linear oracle)"``)
    and each beta's line (see :func:`~inference.studies.frontier.rate_distortion`); with
    more, the parts run in that many processes of ``threads`` threads, without progress bars,
    ``announce`` called as each ends.
    """
    if workers > 1:
        jobs = [
            Job(NAMES[0], linear_sweep, (quick, seed)),
            Job(NAMES[1], vae_sweep, (quick, seed)),
            Job(f"{NAMES[1]}: remedies", vae_remedies, (quick, seed)),
        ]
        linear, vae, remedies = run_jobs(jobs, workers, threads, announce)
        return dict(zip(NAMES, (linear, replace(vae, remedies=remedies))))
    tables = []
    for index, (name, sweep) in enumerate(zip(NAMES, (linear_sweep, vae_sweep))):
        if announce is not None:
            announce(f"sweep {index + 1} of {len(NAMES)}: {name}")
        tables.append(sweep(quick, seed, name.split(",")[0] if progress else False, announce))
    remedies = vae_remedies(quick, seed, "remedies" if progress else False, announce)
    return dict(zip(NAMES, (tables[0], replace(tables[1], remedies=remedies))))


def linear_sweep(
    quick: bool, seed: int, progress: bool | str = False, announce: Announce = None
) -> RateDistortion:
    """pPCA with its noise fixed, full-batch, over the betas."""
    x = _data(quick, seed)
    data_dim = x.shape[1]
    return rate_distortion(
        lambda: LinearGaussian(data_dim, 4, noise="isotropic", fixed_noise=LINEAR_NOISE_SCALE),
        lambda model: AmortizedGaussian(data_dim, 4, hidden=()),
        x,
        steps=1000 if quick else 4000,
        lr=3e-3,
        progress=progress,
        **_common(quick, seed, announce),
    )


def vae_sweep(
    quick: bool, seed: int, progress: bool | str = False, announce: Announce = None
) -> RateDistortion:
    """The full-covariance Gaussian VAE over the betas."""
    x = _data(quick, seed)
    return rate_distortion(
        lambda: _vae_model(x.shape[1]),
        lambda model: _vae_guide(x.shape[1]),
        x,
        steps=_vae_steps(quick),
        batch_size=64,
        progress=progress,
        **_common(quick, seed, announce),
    )


def vae_remedies(
    quick: bool, seed: int, progress: bool | str = False, announce: Announce = None
) -> tuple[FrontierRow, ...]:
    """The VAE trained as at beta = 1 with each remedy other than a beta (the sweep has those),
    measured on the sweep's points."""
    x, steps = _data(quick, seed), _vae_steps(quick)
    data_dim = x.shape[1]
    return remedy_rows(
        lambda: _vae_model(data_dim),
        lambda model, family: _vae_guide(data_dim, family),
        x,
        remedies=[remedy for remedy in REMEDIES if "beta" not in remedy.fit_options(steps)],
        steps=steps,
        num_samples=_num_samples(quick),
        eval_points=EVAL_POINTS,
        seed=seed,
        progress=progress,
        announce=announce,
        batch_size=64,
    )


def _data(quick: bool, seed: int) -> torch.Tensor:
    return datasets.correlated_gaussian(num_data=1000 if quick else 2000, seed=seed).x


def _common(quick: bool, seed: int, announce: Announce) -> dict:
    betas = (0.25, 1.0, 4.0) if quick else (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
    return {
        "betas": betas,
        "seed": seed,
        "eval_points": EVAL_POINTS,
        "announce": announce,
        "num_samples": _num_samples(quick),
    }


def _num_samples(quick: bool) -> int:
    return 100 if quick else 1000


def _vae_steps(quick: bool) -> int:
    return 800 if quick else 3000


def _vae_model(data_dim: int) -> torch.nn.Module:
    return GaussianVAE(data_dim, 2, hidden=(64,), covariance="full")


def _vae_guide(data_dim: int, family: Callable | None = None) -> torch.nn.Module:
    return (family or AmortizedGaussian)(data_dim, 2, hidden=(64,))
