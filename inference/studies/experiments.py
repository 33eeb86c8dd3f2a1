"""The essay's experiments: a VAE trains a latent variable model, and the ELBO prefers to
ignore the latent exactly when the decoder is powerful enough to model the data without it.

Each experiment trains one model/guide pair with SVI (``Trace_ELBO``, an ``AmortizedGaussian``
encoder), records the ELBO, the rate and an IW estimate during training, and ends with
:func:`~inference.diagnose` and :func:`~inference.estimators.compare` on held-in points. The four
experiment functions return :class:`ExperimentResult` rows; :func:`run_collapse` runs them all,
announcing each section and row ("row 3 of 9: 1c, correlated Gaussian, diagonal decoder").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from guides import AmortizedGaussian
from inference._programs import seeded
from inference.estimators.bounds import elbo, iw_log_marginal
from inference.estimators.compare import Comparison, ComparisonRow, compare
from inference.estimators.diagnostics import Diagnosis, diagnose, rate_and_distortion
from inference.estimators.exact import NoExactValueError, exact_log_marginal
from inference.estimators.gaps import GapDecomposition, gap_decomposition
from inference.training.optim import MultiTensorAdam
from inference.training.train import fit
from lvm_models import (
    AutoregressiveVAE,
    BernoulliVAE,
    GaussianVAE,
    LinearGaussian,
    datasets,
    ppca_max_likelihood,
)

LATENT_DIM = 2  # small enough for the quadrature oracle: every row gets an exact log p(x)
REFERENCE_LABELS = {
    "ml_gaussian_full": "ML Gaussian (full cov.)",
    "ml_gaussian_diagonal": "ML Gaussian (diagonal)",
    "ml_ppca": "ML pPCA (closed form)",
}
_TREND_RATIO = 1.25  # a rate that moved by more than this factor over training is a trend


@dataclass(frozen=True)
class Budget:
    """How much work each experiment does."""

    num_data: int = 2000
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-2
    # The last fraction of the steps anneals the learning rate geometrically to final_lr_factor
    # of lr, so the evaluated parameters are a settled iterate, not one noisy step.
    anneal_fraction: float = 0.2
    final_lr_factor: float = 0.1
    record_every: int = 150
    eval_points: int = 256
    record_iw_samples: int = 100
    num_samples: tuple[int, ...] = (1, 10, 100, 1000)
    # Steps of the per-point optimum q* of the gap decomposition (a MeanField per point).
    gap_steps: int = 400
    particles_per_row: int = 2000


DEFAULT_BUDGET = Budget()
# `lvm collapse --quick`: a smoke test, under a minute on 2 cores, that runs every stage on a
# budget too small to show every conclusion of the full run.
QUICK_BUDGET = Budget(
    num_data=1000,
    steps=250,
    record_every=50,
    eval_points=32,
    record_iw_samples=10,
    num_samples=(1, 10, 100),
    particles_per_row=500,
    gap_steps=100,
)


@dataclass(frozen=True)
class ExperimentResult:
    """One trained pair: its bounds, its use of the latent and its training history (nats).

    :ivar exact_per_point: (N,) exact log p(x) of the evaluation points, None where the oracle
        has no certified value; with ``model`` and ``guide`` (the trained pair) it lets a later
        run be compared with this one point by point. None of the three goes to ``to_dict``.
    """

    key: str
    title: str
    data: str
    decoder: str
    powerful: bool
    comparison: Comparison
    diagnosis: Diagnosis
    history: dict[str, list[float]]
    references: dict[str, float]
    seconds: float
    gaps: GapDecomposition | None = None
    exact_per_point: torch.Tensor | None = field(default=None, repr=False, compare=False)
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)
    guide: torch.nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def iw_rows(self) -> list[ComparisonRow]:
        """The comparison's IW_K rows, in increasing K."""
        return [row for row in self.comparison.rows if row.estimator == "iw"]

    @property
    def largest_k(self) -> int:
        return max(row.num_samples for row in self.iw_rows)

    @property
    def elbo(self) -> float:
        return self.comparison.row("elbo").mean

    @property
    def iw(self) -> ComparisonRow:
        return self.comparison.row("iw", self.largest_k)

    @property
    def exact(self) -> float | None:
        try:
            return self.comparison.row("exact").mean
        except KeyError:
            return None

    def finding(self) -> str:
        """Which solution training found, how the rate moved, and the ELBO against the first
        reference (the collapsed optimum where there is one), in words."""
        d = self.diagnosis
        used = "ignores z (collapsed)" if d.latent_ignored else f"uses z ({d.active_units} active)"
        parts = [f"{used}: rate {d.rate:.3f} nats{_trend(self.history['rate'])}"]
        if self.references:
            name, value = next(iter(self.references.items()))
            parts.append(f"ELBO {self.elbo - value:+.3f} nats against {REFERENCE_LABELS[name]}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "title": self.title,
            "data": self.data,
            "decoder": self.decoder,
            "powerful": self.powerful,
            "elbo": self.elbo,
            "iw": asdict(self.iw),
            "exact": self.exact,
            "rate": self.diagnosis.rate,
            "active_units": self.diagnosis.active_units,
            "latent_ignored": self.diagnosis.latent_ignored,
            "finding": self.finding(),
            "references": self.references,
            "diagnosis": self.diagnosis.to_dict(),
            "comparison": self.comparison.to_dict(),
            "gaps": None if self.gaps is None else self.gaps.to_dict(),
            "history": self.history,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class _Setup:
    key: str
    title: str
    data: str
    decoder: str
    powerful: bool
    make_model: Callable[[int], torch.nn.Module]
    references: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] = lambda x, e: {}
    encoder_hidden: tuple[int, ...] = (64,)

    @property
    def label(self) -> str:
        """What the row trains, for progress lines and bars: ``"1c, correlated Gaussian,
        diagonal decoder"``."""
        return f"{self.key}, {self.title}"


def powerful_gaussian_decoders(
    budget: Budget = DEFAULT_BUDGET, seed: int = 0, progress: bool = True
) -> list[ExperimentResult]:
    """1. Gaussian data: (a) independent coordinates with a diagonal decoder and (b) correlated
    coordinates with a full-covariance decoder are powerful, and the latent is ignored; (c) the
    correlated data with the diagonal decoder is not, and the latent carries the correlations."""
    return [_run(setup, budget, seed, progress) for setup in GAUSSIAN_DECODER_ROWS]


def linear_decoder(
    budget: Budget = DEFAULT_BUDGET, seed: int = 0, progress: bool = True
) -> list[ExperimentResult]:
    """2. The correlated data with a linear decoder (probabilistic PCA): a solution that uses z
    is exactly as good, because the exact posterior is Gaussian and the encoder contains it."""
    return [_run(setup, budget, seed, progress) for setup in LINEAR_DECODER_ROWS]


def non_gaussian_data(
    budget: Budget = DEFAULT_BUDGET, seed: int = 0, progress: bool = True
) -> list[ExperimentResult]:
    """3. Non-Gaussian data with the same diagonal Gaussian decoder: not powerful, so the
    latent is used, and ELBO < IW_K <= log p(x)."""
    return [_run(setup, budget, seed, progress) for setup in NON_GAUSSIAN_ROWS]


def binary_data(
    budget: Budget = DEFAULT_BUDGET, seed: int = 0, progress: bool = True
) -> list[ExperimentResult]:
    """4. Binarised digits: a factorised Bernoulli decoder uses its latent; an autoregressive
    decoder is powerful, ignores z, and reaches at least the same log-likelihood."""
    return [_run(setup, budget, seed, progress) for setup in BINARY_ROWS]


EXPERIMENTS = (powerful_gaussian_decoders, linear_decoder, non_gaussian_data, binary_data)


def run_collapse(
    budget: Budget = DEFAULT_BUDGET,
    seed: int = 0,
    progress: bool = True,
    announce: Callable[[str], object] | None = None,
) -> list[ExperimentResult]:
    """Every experiment, in order: a list of :class:`ExperimentResult`.

    :param progress: a progress bar per row, labelled with what it trains.
    :param announce: called with a line before each experiment (its title, ``"1. Gaussian
        data"``) and before each row (``"row 3 of 9: 1c, correlated Gaussian, diagonal
        decoder"``), e.g. ``print``; None: silent.
    """
    sections = [(experiment, _ROWS_OF[experiment]) for experiment in EXPERIMENTS]
    total = sum(len(rows) for _, rows in sections)
    results = []
    for experiment, rows in sections:
        if announce is not None:
            announce(experiment.__doc__.split(":")[0].strip())
        for setup in rows:
            if announce is not None:
                announce(f"row {len(results) + 1} of {total}: {setup.label}")
            results.append(_run(setup, budget, seed, progress))
    return results


def _run(setup: _Setup, budget: Budget, seed: int, progress: bool) -> ExperimentResult:
    start = time.perf_counter()
    x, x_eval = experiment_data(setup, budget, seed)
    recorder = _Recorder(x_eval, budget.record_iw_samples, seed)
    label = setup.label if progress else False
    model, guide = train_pair(setup, x, budget, seed, label, callback=recorder)
    exact, _ = exact_or_reason(model, x_eval)
    diagnosis = diagnose(model, guide, x_eval, exact=exact, seed=seed)
    comparison = compare(
        model,
        guide,
        x_eval,
        num_samples=budget.num_samples,
        particles_per_row=budget.particles_per_row,
        exact=exact,
        seed=seed,
    )
    gaps = gap_decomposition(model, guide, x_eval, exact=exact, steps=budget.gap_steps, seed=seed)
    return ExperimentResult(
        setup.key,
        setup.title,
        setup.data,
        setup.decoder,
        setup.powerful,
        comparison,
        diagnosis,
        recorder.history,
        setup.references(x, x_eval),
        time.perf_counter() - start,
        gaps,
        exact,
        model,
        guide,
    )


def experiment_data(setup: _Setup, budget: Budget, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training data of an experiment and its evaluation points (the first rows)."""
    x = _training_data(setup.data, budget.num_data, seed)
    return x, x[: budget.eval_points]


def train_pair(
    setup: _Setup,
    x: torch.Tensor,
    budget: Budget,
    seed: int,
    progress: bool | str,
    callback: Callable | None = None,
    guide_family: Callable[..., torch.nn.Module] | None = None,
    **objective: object,
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A fresh model and encoder of ``setup`` trained on x; ``objective`` holds fit's options
    of a remedy (``beta``, ``kl_schedule``, ``aggressive``, ...), none by default, and
    ``guide_family(data_dim, latent_dim, hidden=...)`` builds the encoder in place of
    :class:`~guides.AmortizedGaussian`. Each step runs compiled where it can (fit's default).
    ``progress``: as :func:`~inference.fit`'s (a string labels the bar)."""
    with seeded(seed):
        model = setup.make_model(x.shape[1])
        family = guide_family or AmortizedGaussian
        guide = family(x.shape[1], LATENT_DIM, hidden=setup.encoder_hidden)
    fit(
        model,
        guide,
        x,
        steps=budget.steps,
        batch_size=min(budget.batch_size, x.shape[0]),
        seed=seed,
        progress=progress,
        optimizer=MultiTensorAdam({"lr": budget.lr}, lr_factor=_annealing(budget)),
        callback=callback,
        callback_every=budget.record_every,
        **objective,
    )
    return model, guide


def _annealing(budget: Budget) -> Callable[[int], float]:
    """Learning-rate factor: 1, then geometric decay to ``final_lr_factor`` over the last
    ``anneal_fraction`` of the steps."""
    start = round(budget.steps * (1 - budget.anneal_fraction))
    rate = budget.final_lr_factor ** (1 / max(1, budget.steps - start))
    return lambda step: rate ** max(0, step - start)


def exact_or_reason(model: Callable, x: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    """:func:`~inference.exact_log_marginal` of x (N,) and "", or None and why there is none."""
    try:
        return exact_log_marginal(model, x), ""
    except NoExactValueError as error:
        return None, str(error)


def _training_data(name: str, num_data: int, seed: int) -> torch.Tensor:
    data = datasets.load(name, seed=seed, **({} if "digits" in name else {"num_data": num_data}))
    order = torch.randperm(data.x.shape[0], generator=torch.Generator().manual_seed(seed))
    return data.x[order[:num_data]]  # (N, D), shuffled so the evaluation points are a fair sample


class _Recorder:
    """Training callback: ELBO, rate and IW_K on the evaluation points every few steps."""

    def __init__(self, x_eval: torch.Tensor, iw_samples: int, seed: int) -> None:
        self.x_eval, self.iw_samples, self.seed = x_eval, iw_samples, seed
        self.history: dict[str, list[float]] = {"step": [], "elbo": [], "rate": [], "iw": []}

    def __call__(self, step: int, model: Callable, guide: Callable) -> None:
        x, seed = self.x_eval, self.seed
        self.history["step"].append(step + 1)
        self.history["elbo"].append(elbo(model, guide, x, num_particles=8, seed=seed).mean)
        self.history["rate"].append(rate_and_distortion(model, guide, x, seed=seed)[0])
        iw = iw_log_marginal(model, guide, x, num_samples=self.iw_samples, seed=seed)
        self.history["iw"].append(iw.mean)


def _trend(values: list[float]) -> str:
    """How a recorded quantity moved: its first quarter's mean against its last quarter's."""
    quarter = len(values) // 4
    if quarter == 0:
        return ""
    first, last = sum(values[:quarter]) / quarter, sum(values[-quarter:]) / quarter
    if last * _TREND_RATIO < first:
        return f", falling from {first:.2f} early in training"
    if last > first * _TREND_RATIO:
        return f", rising from {first:.2f} early in training"
    return ", steady during training"


def _ml_gaussians(*kinds: str) -> Callable[[torch.Tensor, torch.Tensor], dict[str, float]]:
    """References: log-likelihood of the evaluation points under the ML Gaussians of the
    training data (``"full"`` and/or ``"diagonal"`` covariance), nats per point."""

    def references(x: torch.Tensor, x_eval: torch.Tensor) -> dict[str, float]:
        return {
            f"ml_gaussian_{kind}": datasets.max_likelihood_gaussian(x, kind)
            .log_prob(x_eval.double())
            .mean()
            .item()
            for kind in kinds
        }

    return references


def _ml_ppca(x: torch.Tensor, x_eval: torch.Tensor) -> dict[str, float]:
    ppca = ppca_max_likelihood(x, LATENT_DIM)
    return {"ml_ppca": ppca.log_marginal(x_eval).mean().item(), **_ml_gaussians("full")(x, x_eval)}


# The two powerful cases, which the remedies for collapse (inference.studies.remedies) are tried on.
CORRELATED_FULL_COVARIANCE = _Setup(
    "1b",
    "correlated Gaussian, full-covariance decoder",
    "correlated-gaussian",
    "Gaussian MLP, full covariance",
    True,
    lambda d: GaussianVAE(d, LATENT_DIM, hidden=(64,), covariance="full"),
    _ml_gaussians("full"),
)
CORRELATED_DIAGONAL = _Setup(
    "1c",
    "correlated Gaussian, diagonal decoder",
    "correlated-gaussian",
    "Gaussian MLP, diagonal",
    False,
    lambda d: GaussianVAE(d, LATENT_DIM, hidden=(64,)),
    _ml_gaussians("diagonal", "full"),
)
DIGITS_AUTOREGRESSIVE = _Setup(
    "4b",
    "binarised digits, autoregressive decoder",
    "binarized-digits",
    "autoregressive Bernoulli (MADE)",
    True,
    lambda d: AutoregressiveVAE(d, LATENT_DIM, hidden=(256,)),
)


# The rows of each experiment, in the order they run and print.
GAUSSIAN_DECODER_ROWS = (
    _Setup(
        "1a",
        "independent Gaussian, diagonal decoder",
        "independent-gaussian",
        "Gaussian MLP, diagonal",
        True,
        lambda d: GaussianVAE(d, LATENT_DIM, hidden=(64,)),
        _ml_gaussians("diagonal", "full"),
    ),
    CORRELATED_FULL_COVARIANCE,
    CORRELATED_DIAGONAL,
)
LINEAR_DECODER_ROWS = (
    _Setup(
        "2",
        "correlated Gaussian, linear decoder (pPCA)",
        "correlated-gaussian",
        "linear-Gaussian (pPCA)",
        True,
        lambda d: LinearGaussian(d, LATENT_DIM, noise="isotropic"),
        _ml_ppca,
        encoder_hidden=(),  # a linear encoder: the exact posterior mean is linear in x
    ),
)
_GAUSSIAN_DECODER = lambda d: GaussianVAE(d, LATENT_DIM, hidden=(64,))  # noqa: E731
NON_GAUSSIAN_ROWS = (
    _Setup(
        "3a",
        "two moons, Gaussian decoder",
        "two-moons",
        "Gaussian MLP, diagonal",
        False,
        _GAUSSIAN_DECODER,
        _ml_gaussians("full", "diagonal"),
    ),
    _Setup(
        "3b",
        "Gaussian mixture, Gaussian decoder",
        "gaussian-mixture",
        "Gaussian MLP, diagonal",
        False,
        _GAUSSIAN_DECODER,
        _ml_gaussians("full", "diagonal"),
    ),
    _Setup(
        "3c",
        "dequantised digits, Gaussian decoder",
        "dequantized-digits",
        "Gaussian MLP, diagonal",
        False,
        _GAUSSIAN_DECODER,
        _ml_gaussians("diagonal"),
    ),
)
BINARY_ROWS = (
    _Setup(
        "4a",
        "binarised digits, factorised Bernoulli decoder",
        "binarized-digits",
        "Bernoulli MLP, factorised",
        False,
        lambda d: BernoulliVAE(d, LATENT_DIM, hidden=(128,)),
    ),
    DIGITS_AUTOREGRESSIVE,
)


def collapse_setups() -> list[_Setup]:
    """Every row of every experiment, in the order they run and print."""
    return [setup for experiment in EXPERIMENTS for setup in _ROWS_OF[experiment]]


def run_row(key: str, budget: Budget, seed: int, progress: bool = False) -> ExperimentResult:
    """The row called ``key`` (:func:`setup_of`), trained and measured as
    :func:`run_collapse` does: a job a worker process can run by name."""
    return _run(setup_of(key), budget, seed, progress)


def setup_of(key: str) -> _Setup:
    """The row called ``key`` ("1a" ... "4b"); a ValueError naming the keys otherwise."""
    setups = {setup.key: setup for setup in collapse_setups()}
    if key not in setups:
        raise ValueError(f"unknown case {key!r}; known: {', '.join(setups)}")
    return setups[key]


_ROWS_OF = {
    powerful_gaussian_decoders: GAUSSIAN_DECODER_ROWS,
    linear_decoder: LINEAR_DECODER_ROWS,
    non_gaussian_data: NON_GAUSSIAN_ROWS,
    binary_data: BINARY_ROWS,
}
