"""Pyro programs written as Pyro's own examples write them go through every estimator unchanged.

The programs (``tests/programs/``) keep their originals' idioms: model and guide as bound
methods, networks registered with ``pyro.module``, a data plate declared without a size,
labels as a second argument, global latents, ``BatchNorm1d`` and ``softmax(dim=1)``. Each is
trained briefly with :func:`inference.fit` as a user would pass it; then each estimator's
figures are checked against a hand-written estimator: a loop over particles that calls the
program's networks directly and scores log p(x, z) - log q(z given x) with
``torch.distributions``, using no library code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import pyro
import pytest
import torch
from programs import digits, gmm
from programs.prodlda import ProdLDA, digit_documents
from programs.ss_vae import SSVAE
from programs.vae import VAE
from pyro import poutine
from torch.distributions import (
    Bernoulli,
    Categorical,
    Dirichlet,
    LogNormal,
    Multinomial,
    Normal,
    OneHotCategorical,
    kl_divergence,
)

from inference import (
    check_bounds,
    compare,
    diagnose,
    elbo,
    exact_log_marginal,
    fit,
    iw_log_marginal,
    log_evidence,
)

Z = 3.0  # standard errors: a correct estimator strays this far with probability 0.003
NUM_SAMPLES = 20  # K of the IW figures compared
NUM_REPLICATES = 100  # hand-written IW_K estimates averaged
NUM_PARTICLES = 400  # particles of the ELBO figures compared
PARTICLES_PER_ROW = 1000  # compare()'s budget per row
ROUND_OFF = 1e-4  # nats per point: float32 networks, the same figure computed two ways

TRAIN = slice(0, 1000)
LABELLED = slice(0, 300)  # the labelled part of TRAIN for the SS-VAE
HELD_OUT = slice(1400, None)
EVALUATED = slice(-60, None)  # the held-out rows the estimators are run on


class Figure(NamedTuple):
    mean: float
    stderr: float


@dataclass(frozen=True)
class Case:
    """A trained program as a user passes it to the estimators, and its hand-written figures.

    ``log_weight()`` draws z ~ q(z given x) once for every point and returns
    log p(x, z) - log q(z given x), shape (N,); ``rate()`` is the mean analytic
    KL(q(z given x) || p(z)), where every latent has a closed-form KL.
    """

    model: Callable
    guide: Callable
    x: torch.Tensor
    log_weight: Callable[[], torch.Tensor]
    model_args: tuple = ()
    rate: Callable[[], float] | None = None


def _summary(values: list[torch.Tensor]) -> Figure:
    """Mean and standard error of independent draws of a scalar."""
    draws = torch.stack(values).double()
    return Figure(draws.mean().item(), (draws.std() / math.sqrt(len(draws))).item())


@torch.no_grad()
def hand_written_iw(
    log_weight: Callable[[], torch.Tensor], num_samples: int, replicates: int
) -> Figure:
    """E[IW_K] averaged over points: mean of independent K-particle estimates
    log (1/K) sum_k w_k, each averaged over the points."""
    estimates = []
    for _ in range(replicates):
        log_weights = torch.stack([log_weight() for _ in range(num_samples)])  # (K, N)
        estimates.append((torch.logsumexp(log_weights, 0) - math.log(num_samples)).mean())
    return _summary(estimates)


@torch.no_grad()
def hand_written_elbo(log_weight: Callable[[], torch.Tensor], num_particles: int) -> Figure:
    """E_q[log w] averaged over points, one point-average per particle."""
    return _summary([log_weight().mean() for _ in range(num_particles)])


def _standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)


def _standard_normal_kl(loc: torch.Tensor, scale: torch.Tensor) -> float:
    prior = Normal(torch.zeros_like(loc), torch.ones_like(scale))
    return kl_divergence(Normal(loc, scale), prior).sum(-1).mean().item()


@pytest.fixture(scope="module")
def shuffled_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit (N, 1, 8, 8) with its label, in one fixed random order."""
    pixels, labels = digits.images()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return pixels[order], labels[order]


# ----------------------------------------------------------------- vae.py


@pytest.fixture(scope="module")
def trained_vae(shuffled_digits) -> tuple[VAE, VAE]:
    """The VAE before and after training on binarised images of shape (N, 1, 8, 8)."""
    pyro.clear_param_store()  # the programs share names such as "decoder" in the global store
    pyro.set_rng_seed(0)
    vae = VAE(z_dim=2, hidden_dim=32)
    untrained = copy.deepcopy(vae)
    x = digits.binarised(shuffled_digits[0][TRAIN])
    fit(vae.model, vae.guide, x, steps=300, batch_size=100, lr=1e-2, seed=0, progress=False)
    return untrained, vae


def _vae_case(vae: VAE, x: torch.Tensor) -> Case:
    def log_weight() -> torch.Tensor:
        z_loc, z_scale = vae.encoder(x)
        z = Normal(z_loc, z_scale).sample()
        pixels = Bernoulli(probs=vae.decoder(z)).log_prob(x.reshape(x.shape[0], -1)).sum(-1)
        return pixels + _standard_normal_log_prob(z) - Normal(z_loc, z_scale).log_prob(z).sum(-1)

    def rate() -> float:
        with torch.no_grad():
            return _standard_normal_kl(*vae.encoder(x))

    return Case(vae.model, vae.guide, x, log_weight, rate=rate)


@pytest.fixture(scope="module")
def vae_case(trained_vae, shuffled_digits) -> Case:
    return _vae_case(trained_vae[1], digits.binarised(shuffled_digits[0][EVALUATED]))


@pytest.fixture(scope="module")
def untrained_vae_case(trained_vae, shuffled_digits) -> Case:
    return _vae_case(trained_vae[0], digits.binarised(shuffled_digits[0][EVALUATED]))


# ----------------------------------------------------------------- ss_vae_M2.py


@pytest.fixture(scope="module")
def trained_ss_vae(shuffled_digits) -> SSVAE:
    """M2 trained semi-supervised as the original: labelled rounds (labels as ``ys``, the
    second argument) alternating with unlabelled rounds (``y`` enumerated by ``fit``)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pixels, labels = shuffled_digits
    x = digits.binarised(pixels[TRAIN]).reshape(-1, digits.NUM_PIXELS)
    ys = digits.one_hot(labels[LABELLED])
    ss_vae = SSVAE(z_dim=4, hidden_layers=(64,), config_enum="parallel")
    options = dict(steps=100, batch_size=100, lr=3e-3, progress=False)
    for seed in range(2):
        fit(ss_vae.model, ss_vae.guide, x[LABELLED], model_args=(ys,), seed=seed, **options)
        fit(ss_vae.model, ss_vae.guide, x[LABELLED.stop :], seed=seed, **options)
    return ss_vae


def _ss_vae_log_weight(
    ss_vae: SSVAE, xs: torch.Tensor, ys: torch.Tensor | None
) -> Callable[[], torch.Tensor]:
    """log p(x, y, z) - log q(y, z given x) with y ~ q(y given x), or log p(x, y, z) -
    log q(z given x, y) where the label is given."""

    def log_weight() -> torch.Tensor:
        labels, log_q_labels = ys, 0.0
        if ys is None:
            classifier = OneHotCategorical(probs=ss_vae.encoder_y(xs))
            labels = classifier.sample()
            log_q_labels = classifier.log_prob(labels)
        loc, scale = ss_vae.encoder_z([xs, labels])
        z = Normal(loc, scale).sample()
        label_prior = OneHotCategorical(probs=torch.full_like(labels, 1 / digits.NUM_CLASSES))
        pixels = Bernoulli(probs=ss_vae.decoder([z, labels])).log_prob(xs).sum(-1)
        log_prior = label_prior.log_prob(labels) + _standard_normal_log_prob(z)
        return pixels + log_prior - Normal(loc, scale).log_prob(z).sum(-1) - log_q_labels

    return log_weight


@pytest.fixture(scope="module")
def ss_vae_labelled_case(trained_ss_vae, shuffled_digits) -> Case:
    pixels, labels = shuffled_digits
    xs = digits.binarised(pixels[EVALUATED]).reshape(-1, digits.NUM_PIXELS)
    ys = digits.one_hot(labels[EVALUATED])
    ss_vae = trained_ss_vae

    def rate() -> float:
        with torch.no_grad():
            return _standard_normal_kl(*ss_vae.encoder_z([xs, ys]))

    log_weight = _ss_vae_log_weight(ss_vae, xs, ys)
    return Case(ss_vae.model, ss_vae.guide, xs, log_weight, model_args=(ys,), rate=rate)


@pytest.fixture(scope="module")
def ss_vae_unlabelled_case(trained_ss_vae, shuffled_digits) -> Case:
    xs = digits.binarised(shuffled_digits[0][EVALUATED]).reshape(-1, digits.NUM_PIXELS)
    log_weight = _ss_vae_log_weight(trained_ss_vae, xs, None)
    return Case(trained_ss_vae.model, trained_ss_vae.guide, xs, log_weight)


# ----------------------------------------------------------------- ProdLDA tutorial


@pytest.fixture(scope="module")
def trained_prodlda(shuffled_digits) -> tuple[ProdLDA, ProdLDA]:
    """ProdLDA before and after training on digits as word counts, both in eval() mode."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    docs = digit_documents(shuffled_digits[0][TRAIN])
    prodlda = ProdLDA(vocab_size=docs.shape[1], num_topics=4, hidden=32, dropout=0.2)
    untrained = copy.deepcopy(prodlda)
    fit(
        prodlda.model,
        prodlda.guide,
        docs,
        steps=300,
        batch_size=32,
        lr=1e-2,
        seed=0,
        progress=False,
    )
    return untrained.eval(), prodlda.eval()


def _prodlda_case(prodlda: ProdLDA, docs: torch.Tensor) -> Case:
    def log_weight() -> torch.Tensor:
        loc, scale = prodlda.encoder(docs)
        logtheta = Normal(loc, scale).sample()
        word_probs = prodlda.decoder(torch.softmax(logtheta, -1))
        words = Multinomial(int(docs.sum(-1).max()), probs=word_probs).log_prob(docs)
        return (
            words
            + _standard_normal_log_prob(logtheta)
            - Normal(loc, scale).log_prob(logtheta).sum(-1)
        )

    def rate() -> float:
        with torch.no_grad():
            return _standard_normal_kl(*prodlda.encoder(docs))

    return Case(prodlda.model, prodlda.guide, docs, log_weight, rate=rate)


@pytest.fixture(scope="module")
def prodlda_case(trained_prodlda, shuffled_digits) -> Case:
    return _prodlda_case(trained_prodlda[1], digit_documents(shuffled_digits[0][EVALUATED]))


@pytest.fixture(scope="module")
def untrained_prodlda_case(trained_prodlda, shuffled_digits) -> Case:
    return _prodlda_case(trained_prodlda[0], digit_documents(shuffled_digits[0][EVALUATED]))


# ----------------------------------------------------------------- GMM tutorial


@pytest.fixture(scope="module")
def trained_gmm():
    """The tutorial's MAP fit: the best of 10 starts, 200 steps of its Adam, ``assignment``
    enumerated in the model; and its full guide, whose assignment probabilities stay at the
    tutorial's uniform start (so the importance weights of the assignments vary)."""
    data = gmm.tutorial_data()
    global_guide = gmm.initialize(data, num_seeds=10)
    optimizer = pyro.optim.Adam({"lr": 0.1, "betas": [0.8, 0.99]})
    fit(
        gmm.model,
        global_guide,
        data,
        steps=200,
        batch_size=len(data),
        optimizer=optimizer,
        seed=0,
        progress=False,
    )
    map_estimates = {k: v.detach() for k, v in global_guide.median(data).items()}
    return data, map_estimates, gmm.make_full_guide(global_guide)


def _assignment_probs(guide: Callable, data: torch.Tensor) -> torch.Tensor:
    """The full guide's q(assignment) per point, (N, K), as the guide builds it."""
    return poutine.trace(guide).get_trace(data).nodes["assignment"]["fn"].probs.detach()


def _gmm_exact_given_globals(data: torch.Tensor, globals_: dict) -> torch.Tensor:
    """log p(x_n given weights, locs, scale) = log sum_k weights_k N(x_n; locs_k, scale): (N,)."""
    components = Normal(globals_["locs"], globals_["scale"]).log_prob(data[:, None])  # (N, K)
    return torch.logsumexp(globals_["weights"].log() + components, -1)


@pytest.fixture(scope="module")
def gmm_given_globals_case(trained_gmm) -> Case:
    """The model with its globals fixed at the MAP by ``poutine.condition``; the full guide
    with the global sites blocked."""
    data, globals_, full_guide = trained_gmm
    model = poutine.condition(gmm.model, data=globals_)
    guide = poutine.block(full_guide, hide=list(gmm.GLOBAL_SITES))
    probs = _assignment_probs(guide, data)
    prior = Categorical(probs=globals_["weights"])

    def log_weight() -> torch.Tensor:
        assignment = Categorical(probs=probs).sample()
        observed = Normal(globals_["locs"][assignment], globals_["scale"]).log_prob(data)
        return prior.log_prob(assignment) + observed - Categorical(probs=probs).log_prob(assignment)

    def rate() -> float:
        return kl_divergence(Categorical(probs=probs), prior).mean().item()

    return Case(model, guide, data, log_weight, rate=rate)


# ----------------------------------------------------------------- every estimator


CASES = [
    "vae_case",
    "ss_vae_labelled_case",
    "ss_vae_unlabelled_case",
    "prodlda_case",
    "gmm_given_globals_case",
]
WITH_ANALYTIC_RATE = ["vae_case", "ss_vae_labelled_case", "prodlda_case", "gmm_given_globals_case"]


def _agree(estimate, expected: Figure) -> bool:
    return abs(estimate.mean - expected.mean) < Z * math.hypot(estimate.stderr, expected.stderr)


@pytest.mark.parametrize("case_name", CASES)
def test_iw_log_marginal_matches_the_hand_written_iw(case_name, request):
    case: Case = request.getfixturevalue(case_name)
    estimate = iw_log_marginal(
        case.model, case.guide, case.x, num_samples=NUM_SAMPLES, seed=1, model_args=case.model_args
    )
    expected = hand_written_iw(case.log_weight, NUM_SAMPLES, NUM_REPLICATES)
    assert _agree(estimate, expected), (estimate.mean, estimate.stderr, expected)


@pytest.mark.parametrize("case_name", CASES)
def test_elbo_matches_the_hand_written_elbo(case_name, request):
    case: Case = request.getfixturevalue(case_name)
    estimate = elbo(
        case.model,
        case.guide,
        case.x,
        num_particles=NUM_PARTICLES,
        seed=2,
        model_args=case.model_args,
    )
    expected = hand_written_elbo(case.log_weight, NUM_PARTICLES)
    assert _agree(estimate, expected), (estimate.mean, estimate.stderr, expected)


@pytest.mark.parametrize("case_name", CASES)
def test_compare_iw_row_matches_the_hand_written_iw(case_name, request):
    case: Case = request.getfixturevalue(case_name)
    table = compare(
        case.model,
        case.guide,
        case.x,
        num_samples=(1, NUM_SAMPLES),
        particles_per_row=PARTICLES_PER_ROW,
        seed=3,
        model_args=case.model_args,
    )
    row = table.row("iw", NUM_SAMPLES)
    expected = hand_written_iw(case.log_weight, NUM_SAMPLES, NUM_REPLICATES)
    assert _agree(row, expected), (row.mean, row.stderr, expected)


@pytest.mark.parametrize("case_name", WITH_ANALYTIC_RATE)
def test_diagnose_rate_is_the_analytic_kl(case_name, request):
    case: Case = request.getfixturevalue(case_name)
    diagnosis = diagnose(case.model, case.guide, case.x, seed=4, model_args=case.model_args)
    assert diagnosis.rate == pytest.approx(case.rate(), rel=ROUND_OFF, abs=ROUND_OFF)


@pytest.mark.parametrize("case_name", CASES)
def test_check_bounds_passes_and_reports_the_hand_written_elbo(case_name, request):
    case: Case = request.getfixturevalue(case_name)
    report = check_bounds(
        case.model,
        case.guide,
        case.x,
        num_samples=(1, 10),
        particles_per_row=NUM_PARTICLES,
        seed=5,
        model_args=case.model_args,
    )
    expected = hand_written_elbo(case.log_weight, NUM_PARTICLES)
    assert _agree(report.elbo, expected), (report.elbo.mean, report.elbo.stderr, expected)


@pytest.mark.parametrize(
    ("trained", "untrained"),
    [("vae_case", "untrained_vae_case"), ("prodlda_case", "untrained_prodlda_case")],
)
def test_fit_on_bound_methods_raises_the_hand_written_elbo(trained, untrained, request):
    after = hand_written_elbo(request.getfixturevalue(trained).log_weight, NUM_PARTICLES)
    before = hand_written_elbo(request.getfixturevalue(untrained).log_weight, NUM_PARTICLES)
    assert after.mean - before.mean > Z * math.hypot(after.stderr, before.stderr)


# ----------------------------------------------------------------- labels as model_args


def test_ss_vae_trained_with_labels_classifies_held_out_digits_well_above_chance(
    trained_ss_vae, shuffled_digits
):
    # Without the labels reaching the model, M2's classes are unnamed clusters: about 1 in 10.
    pixels, labels = shuffled_digits
    xs = digits.binarised(pixels[HELD_OUT]).reshape(-1, digits.NUM_PIXELS)
    with torch.no_grad():
        predicted = trained_ss_vae.classifier(xs).argmax(-1)
    assert (predicted == labels[HELD_OUT]).double().mean().item() > 0.5


def test_ss_vae_evidence_with_true_labels_exceeds_that_with_wrong_labels(
    ss_vae_labelled_case, shuffled_digits
):
    case = ss_vae_labelled_case
    wrong = digits.one_hot((shuffled_digits[1][EVALUATED] + 1) % digits.NUM_CLASSES)
    true_labels, wrong_labels = (
        iw_log_marginal(
            case.model, case.guide, case.x, num_samples=NUM_SAMPLES, seed=6, model_args=(ys,)
        )
        for ys in (case.model_args[0], wrong)
    )
    assert true_labels.mean - wrong_labels.mean > Z * math.hypot(
        true_labels.stderr, wrong_labels.stderr
    )


def test_ss_vae_evidence_without_labels_is_the_sum_over_labels_of_the_labelled_evidence(
    ss_vae_unlabelled_case,
):
    # log p(x) = log sum_y p(x, y): the unlabelled program against the labelled one run at
    # each of the ten labels. K is large enough that both IW biases are below the errors.
    case = ss_vae_unlabelled_case
    num_samples = 200
    labelled = [
        iw_log_marginal(
            case.model,
            case.guide,
            case.x,
            num_samples=num_samples,
            seed=7 + label,
            model_args=(digits.one_hot(torch.full((len(case.x),), label)),),
        )
        for label in range(digits.NUM_CLASSES)
    ]
    summed = torch.logsumexp(torch.stack([e.per_point for e in labelled]), 0)  # (N,)
    unlabelled = iw_log_marginal(case.model, case.guide, case.x, num_samples=num_samples, seed=20)
    # each labelled figure's error enters the sum weighted by its share of p(x)
    shares = torch.softmax(torch.stack([e.per_point for e in labelled]), 0)  # (10, N)
    summed_stderr = (
        (shares * torch.stack([e.per_point_stderr for e in labelled])).pow(2).sum().sqrt()
        / len(case.x)
    ).item()
    difference = unlabelled.mean - summed.mean().item()
    assert abs(difference) < Z * math.hypot(unlabelled.stderr, summed_stderr)


# ----------------------------------------------------------------- BatchNorm and softmax(dim=1)


def test_prodlda_particles_are_evaluated_one_at_a_time_with_a_warning(prodlda_case):
    # BatchNorm1d and softmax(dim=1) take the particle dim for the batch or the vocabulary.
    case = prodlda_case
    with pytest.warns(UserWarning, match="one at a time"):
        iw_log_marginal(case.model, case.guide, case.x, num_samples=2, seed=8)


# ----------------------------------------------------------------- global latents


GLOBAL_SITES_NAMED = "".join(f"(?=.*{name})" for name in gmm.GLOBAL_SITES)
PER_POINT_ESTIMATORS = {
    "elbo": lambda m, g, x: elbo(m, g, x, num_particles=2, seed=0),
    "iw_log_marginal": lambda m, g, x: iw_log_marginal(m, g, x, num_samples=2, seed=0),
    "compare": lambda m, g, x: compare(m, g, x, num_samples=(1, 2), seed=0),
    "diagnose": lambda m, g, x: diagnose(m, g, x, seed=0),
    "check_bounds": lambda m, g, x: check_bounds(
        m, g, x, num_samples=(1, 2), particles_per_row=4, seed=0
    ),
}


def test_gmm_fit_finds_the_map_of_the_tutorial(trained_gmm):
    # Dirichlet(1/2) MAP weights: (n_k - 1/2) / (N - 1) with 2 and 3 of the 5 points.
    _, globals_, _ = trained_gmm
    torch.testing.assert_close(
        globals_["weights"].sort().values, torch.tensor([0.375, 0.625]), rtol=0, atol=0.01
    )


@pytest.mark.parametrize("estimator", PER_POINT_ESTIMATORS)
def test_gmm_per_point_estimators_name_the_global_latents(estimator, trained_gmm):
    data, _, full_guide = trained_gmm
    with pytest.raises(ValueError, match=f"(?s){GLOBAL_SITES_NAMED}"):
        PER_POINT_ESTIMATORS[estimator](gmm.model, full_guide, data)


def test_gmm_log_evidence_matches_a_hand_written_whole_data_set_iw(trained_gmm):
    data, globals_, full_guide = trained_gmm
    probs = _assignment_probs(full_guide, data)
    log_prior = (
        Dirichlet(0.5 * torch.ones(gmm.K)).log_prob(globals_["weights"])
        + LogNormal(0.0, 2.0).log_prob(globals_["scale"])
        + Normal(0.0, 10.0).log_prob(globals_["locs"]).sum()
    )

    def log_weight() -> torch.Tensor:
        # one draw of every assignment; the point-mass globals have log q = 0
        assignment = Categorical(probs=probs).sample()
        points = Categorical(probs=globals_["weights"]).log_prob(assignment) + Normal(
            globals_["locs"][assignment], globals_["scale"]
        ).log_prob(data)
        return (points - Categorical(probs=probs).log_prob(assignment)).sum() + log_prior

    num_samples = 1000
    estimate = log_evidence(gmm.model, full_guide, data, num_samples=num_samples, seed=9)
    expected = hand_written_iw(lambda: log_weight().reshape(1), num_samples, 20)
    assert abs(estimate.value - expected.mean) < Z * math.hypot(estimate.stderr, expected.stderr)


def test_gmm_exact_log_marginal_given_globals_is_the_enumerated_sum(
    gmm_given_globals_case, trained_gmm
):
    data, globals_, _ = trained_gmm
    exact = exact_log_marginal(gmm_given_globals_case.model, data)
    expected = _gmm_exact_given_globals(data, globals_)
    torch.testing.assert_close(exact.double(), expected.double(), rtol=0, atol=ROUND_OFF)


def test_gmm_iw_given_globals_converges_to_the_enumerated_sum(gmm_given_globals_case, trained_gmm):
    data, globals_, _ = trained_gmm
    case = gmm_given_globals_case
    estimate = iw_log_marginal(case.model, case.guide, data, num_samples=1000, seed=10)
    exact = _gmm_exact_given_globals(data, globals_).mean().item()
    assert abs(estimate.mean - exact) < Z * estimate.stderr + ROUND_OFF


def test_gmm_compare_exact_row_given_globals_is_the_enumerated_sum(
    gmm_given_globals_case, trained_gmm
):
    data, globals_, _ = trained_gmm
    case = gmm_given_globals_case
    table = compare(case.model, case.guide, data, num_samples=(1, 10), seed=11)
    expected = _gmm_exact_given_globals(data, globals_).mean().item()
    assert table.row("exact").mean == pytest.approx(expected, abs=ROUND_OFF)


def test_gmm_check_bounds_given_globals_checks_against_the_enumerated_sum(
    gmm_given_globals_case, trained_gmm
):
    data, globals_, _ = trained_gmm
    case = gmm_given_globals_case
    report = check_bounds(
        case.model, case.guide, data, num_samples=(1, 10), particles_per_row=NUM_PARTICLES, seed=12
    )
    expected = _gmm_exact_given_globals(data, globals_)
    torch.testing.assert_close(report.exact.double(), expected.double(), rtol=0, atol=ROUND_OFF)
