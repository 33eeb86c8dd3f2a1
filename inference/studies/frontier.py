"""The price of forcing the latent: a sweep over beta, the rate-distortion plane, log p(x).

Every remedy for "posterior collapse" changes the objective. With a KL weight beta the
objective is E_q log p(x given z) - beta KL(q(z given x) || p(z)) = -(D + beta R), rate R and
distortion D (Alemi et al., 2018, "Fixing a Broken ELBO"). beta < 1 buys rate; the ELBO
-(R + D) and log p(x) say what it cost. :func:`rate_distortion` trains one fresh pair per
beta and measures both; :func:`linear_beta_optimum` is the exact answer for linear-Gaussian
models.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import torch

from inference._programs import seeded
from inference._validate import check_data, check_positive_int, check_seed
from inference.estimators.bounds import iw_log_marginal
from inference.estimators.diagnostics import diagnose
from inference.training.train import fit

if TYPE_CHECKING:
    from inference.studies.remedies import Remedy

LINEAR_NOISE_SCALE = 0.5  # sigma of the built-in linear sweep: beta sigma^2 crosses its spectrum


@dataclass(frozen=True)
class FrontierRow:
    """One beta: where its trained pair sits on the rate-distortion plane, in nats per point."""

    beta: float
    rate: float
    distortion: float
    elbo: float
    iw: float
    iw_stderr: float
    exact: float | None
    active_units: int
    remedy: str = ""  # the remedy a row was trained with (then beta is 1); "" in a sweep


@dataclass(frozen=True)
class RateDistortion:
    """The rows of :func:`rate_distortion`, printable, with ``to_dict()`` / ``to_json()``."""

    rows: tuple[FrontierRow, ...]
    num_data: int
    num_samples: int
    remedies: tuple[FrontierRow, ...] = ()  # the same pair trained with each remedy, beta 1

    @property
    def best_elbo(self) -> float:
        return max(row.elbo for row in self.rows)

    def to_dict(self) -> dict:
        return {
            "num_data": self.num_data,
            "num_samples": self.num_samples,
            "best_elbo": self.best_elbo,
            "rows": [asdict(row) for row in self.rows],
            "remedies": [asdict(row) for row in self.remedies],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        header = f"{'beta':>20}{'rate':>9}{'distortion':>12}{'ELBO':>10}{'IW_K':>10}"
        header += f"{'stderr':>8}{'exact':>10}{'active':>8}"
        lines = [header]
        for row in (*self.rows, *self.remedies):
            exact = "-" if row.exact is None else f"{row.exact:.3f}"
            first = row.remedy or f"{row.beta:.3g}"
            lines.append(
                f"{first:>20}{row.rate:>9.3f}{row.distortion:>12.3f}{row.elbo:>10.3f}"
                f"{row.iw:>10.3f}{row.iw_stderr:>8.3f}{exact:>10}{row.active_units:>8}"
            )
        lines.append(f"(nats per data point, N={self.num_data}, K={self.num_samples})")
        return "\n".join(lines)


def rate_distortion(
    make_model: Callable[[], Callable],
    make_guide: Callable[[Callable], Callable],
    data: torch.Tensor,
    *,
    betas: Sequence[float],
    steps: int,
    num_samples: int = 1000,
    seed: int | None = None,
    eval_points: int | None = None,
    progress: bool | str = False,
    announce: Callable[[str], object] | None = None,
    **fit_options: object,
) -> RateDistortion:
    """Train a fresh model/guide pair per beta and place each on the rate-distortion plane.

    For each beta: ``model = make_model()``, ``guide = make_guide(model)`` (both built after
    ``torch.manual_seed(seed)``, so every beta starts from the same parameters), then
    :func:`~inference.fit` with that ``beta`` (and ``fit_options``: ``batch_size``, ``lr``,
    ``kl_warmup_steps``, ...), then on the first ``eval_points`` rows of ``data``: rate R,
    distortion D and active units from :func:`~inference.diagnose`, the ELBO -(R + D), the
    IW estimate of log p(x) with K = ``num_samples`` and its standard error, and the exact log
    p(x) where :func:`~inference.exact_log_marginal` has a route.

    Every argument is checked before anything is built or trained (``fit_options`` by
    :func:`~inference.fit`, before its first step).

    :param make_model: a function of no arguments that builds a fresh model.
    :param make_guide: a function of the model that builds a fresh guide for it.
    :param data: (N, D) training data.
    :param betas: the KL weights, each finite and > 0 (``fit`` accepts 0, but the point is a
        sweep).
    :param eval_points: how many rows of ``data`` to evaluate on, in [1, N]; None: all N.
    :param progress: a progress bar per beta, labelled with it (a string: that label first,
        ``"pPCA, beta 0.25"``).
    :param announce: called with a line before each beta is trained (``"beta 0.25 (1 of 3)"``),
        e.g. ``print``; None: silent.
    :returns: a :class:`RateDistortion`, one row per beta in the order given.
    """
    _check_factory("make_model", make_model, "a fresh model, e.g. lambda: GaussianVAE(2, 2)")
    _check_factory(
        "make_guide",
        make_guide,
        "a fresh guide from the model, e.g. lambda model: AmortizedGaussian(2, 2)",
    )
    check_data(data, "data")
    check_positive_int("steps", steps)
    check_positive_int("num_samples", num_samples)
    seed = check_seed(seed)
    betas = _checked_betas(betas)
    num_data = data.shape[0]
    if eval_points is not None and (
        isinstance(eval_points, bool)
        or not isinstance(eval_points, numbers.Integral)
        or not 1 <= eval_points <= num_data
    ):
        raise ValueError(
            f"eval_points must be None or an integer in [1, N={num_data}]; got {eval_points!r}"
        )
    if "beta" in fit_options:
        raise TypeError("rate_distortion takes its KL weights from betas; drop beta=")
    x_eval = data[: num_data if eval_points is None else int(eval_points)]
    rows = []
    for beta in betas:
        if announce is not None:
            announce(f"beta {beta:g} ({len(rows) + 1} of {len(betas)})")
        with seeded(0 if seed is None else seed):
            model = make_model()
            guide = make_guide(model)
        label = f"{progress}, beta {beta:g}" if isinstance(progress, str) else f"beta {beta:g}"
        fit(
            model,
            guide,
            data,
            steps=steps,
            beta=beta,
            seed=seed,
            progress=label if progress else False,
            **fit_options,
        )
        rows.append(_frontier_row(beta, model, guide, x_eval, num_samples, seed))
    return RateDistortion(tuple(rows), x_eval.shape[0], num_samples)


def remedy_rows(
    make_model: Callable[[], Callable],
    make_guide: Callable[[Callable, Callable | None], Callable],
    data: torch.Tensor,
    *,
    remedies: Sequence[Remedy],
    steps: int,
    num_samples: int,
    eval_points: int,
    seed: int,
    progress: bool | str = False,
    announce: Callable[[str], object] | None = None,
    **fit_options: object,
) -> tuple[FrontierRow, ...]:
    """A row per remedy, for :attr:`RateDistortion.remedies`: the pair trained as
    :func:`rate_distortion` trains its beta = 1 pair, from the same initial parameters, with
    the remedy's options for fit and, where it has one, its guide family (``make_guide(model,
    family)``; family None for the sweep's own), readied for evaluation
    (:meth:`~inference.studies.remedies.Remedy.ready`) and measured on the first
    ``eval_points`` rows, as the sweep's are."""
    x_eval = data[:eval_points]
    rows = []
    for index, remedy in enumerate(remedies):
        if announce is not None:
            announce(f"remedy {remedy.name} ({index + 1} of {len(remedies)})")
        with seeded(seed):
            model = make_model()
            guide = make_guide(model, remedy.guide_family)
        label = f"{progress}, {remedy.name}" if isinstance(progress, str) else remedy.name
        options = {**fit_options, **remedy.fit_options(steps)}
        fit(model, guide, data, steps=steps, seed=seed, progress=label if progress else False,
            **options)  # fmt: skip
        remedy.ready(guide, data)
        row = _frontier_row(1.0, model, guide, x_eval, num_samples, seed)
        rows.append(replace(row, remedy=remedy.name))
    return tuple(rows)


def _check_factory(name: str, factory: object, builds: str) -> None:
    # A model or guide is callable too (it runs its program), so it is refused by its type.
    if isinstance(factory, torch.nn.Module) or not callable(factory):
        kind = type(factory).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        got = f"{article} {kind} instance" if callable(factory) else kind
        raise TypeError(f"{name} must be a callable that builds {builds}; got {got}")


def _checked_betas(betas: object) -> tuple[float, ...]:
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Iterable):
        raise TypeError(
            f"betas must be a sequence of numbers > 0, e.g. (0.5, 1.0, 2.0); got {betas!r}"
        )
    betas = tuple(betas)
    if not betas or not all(_is_positive_finite(beta) for beta in betas):
        raise ValueError(f"betas must be a non-empty sequence of finite numbers > 0; got {betas!r}")
    return tuple(float(beta) for beta in betas)


def _is_positive_finite(value: object) -> bool:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return real and 0 < value < math.inf


def _frontier_row(
    beta: float,
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int,
    seed: int | None,
) -> FrontierRow:
    diagnosis = diagnose(model, guide, x, seed=seed)
    iw = iw_log_marginal(model, guide, x, num_samples=num_samples, seed=seed)
    return FrontierRow(
        beta=beta,
        rate=diagnosis.rate,
        distortion=diagnosis.distortion,
        elbo=-(diagnosis.rate + diagnosis.distortion),
        iw=iw.mean,
        iw_stderr=iw.stderr,
        exact=diagnosis.exact,
        active_units=diagnosis.active_units,
    )


@dataclass(frozen=True)
class LinearBetaOptimum:
    """The optimum of the beta-objective for a linear-Gaussian model with fixed noise.

    :ivar eigenvalues: (D,) the sample covariance's eigenvalues lambda_i, descending.
    :ivar active_units: how many of the top k exceed beta sigma^2.
    :ivar squared_singular_values: (k,) the optimal weight's, max(lambda_i - beta sigma^2, 0).
    """

    eigenvalues: torch.Tensor
    active_units: int
    squared_singular_values: torch.Tensor


def linear_beta_optimum(
    x: torch.Tensor, latent_dim: int, noise_scale: float, beta: float
) -> LinearBetaOptimum:
    """Where the beta-objective of probabilistic PCA with noise held at sigma^2 is maximised.

    For p(z) = N(0, I_k), p(x given z) = N(W z + b, sigma^2 I) and any Gaussian q(z given x),

        E_q log N(x; W z + b, sigma^2 I) - beta KL(q || p)
          = beta [ E_q log N(x; W z + b, beta sigma^2 I) - KL(q || p) ] + c(x),

    because -|x - W z - b|^2 / (2 sigma^2) = beta (-|x - W z - b|^2 / (2 beta sigma^2)) and the
    normalising constants do not depend on W, b or q. Dividing by beta, the beta-objective is
    the ordinary ELBO of the same model with noise variance beta sigma^2. Its maximum over a
    q family that holds the exact (Gaussian) posterior is the maximum likelihood of that
    pPCA, whose solution is known in closed form (Tipping and Bishop, 1999): b is the sample
    mean and W = U_k (Lambda_k - beta sigma^2 I)_+^(1/2) R, with Lambda_k the k largest
    eigenvalues of the sample covariance (divided by N), U_k their eigenvectors and R any
    rotation. Directions with lambda_i <= beta sigma^2 get a zero column: their latent unit
    carries nothing and is inactive (Lucas et al., 2019, "Don't Blame the ELBO").

    :param x: (N, D) data.
    :param latent_dim: k.
    :param noise_scale: sigma, the fixed noise standard deviation.
    :param beta: the KL weight, > 0.
    """
    x = check_data(x, matrix=True).double()
    data_dim = x.shape[1]
    if (
        isinstance(latent_dim, bool)
        or not isinstance(latent_dim, numbers.Integral)
        or not 1 <= latent_dim <= data_dim
    ):
        raise ValueError(f"latent_dim must be an integer in [1, D={data_dim}]; got {latent_dim!r}")
    for name, value in (("noise_scale", noise_scale), ("beta", beta)):
        if not _is_positive_finite(value):
            raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    centered = x - x.mean(0)
    eigenvalues = torch.linalg.eigvalsh(centered.T @ centered / x.shape[0]).flip(0)  # descending
    shrunk = eigenvalues[:latent_dim] - beta * noise_scale**2
    return LinearBetaOptimum(eigenvalues, int((shrunk > 0).sum()), shrunk.clamp_min(0))
