from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from guides import AmortizedGaussian, ExactPosterior
from inference import Estimate, GapDecomposition, diagnose, gap_decomposition
from lvm_models import LinearGaussian

Z = 4.0  # standard errors: a correct estimator strays this far with probability 6e-5
# What the fit of q* may leave on the table: its excess KL(q_fit || q*) per point, measured at
# about 5e-4 nats on these models (32 draws per step, the learning rate decaying to lr / 100).
FIT_TOLERANCE = 5e-3
NUM_POINTS, FIT_STEPS, BOUND_SAMPLES = 40, 400, 200
NOISE = 0.5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The fits here step tensors of a few hundred numbers: one thread is the fastest, and on
    a busy machine a second one only waits (ten times slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(weight: list[list[float]]) -> LinearGaussian:
    weight = torch.tensor(weight, dtype=torch.float64)
    data_dim = weight.shape[0]
    bias = torch.linspace(-1.0, 1.0, data_dim, dtype=torch.float64)
    return LinearGaussian.from_params(weight, bias, torch.full((data_dim,), NOISE))


def _posterior_precision(model: LinearGaussian) -> torch.Tensor:
    scaled = model.weight / model.noise_scale.unsqueeze(-1)
    return torch.eye(model.latent_dim, dtype=torch.float64) + scaled.T @ scaled


@pytest.fixture(scope="module")
def diagonal():
    """W^T Psi^-1 W is diagonal: the exact posterior is a diagonal Gaussian, in the family."""
    model = _model([[1.0, 0.0], [2.0, 0.0], [0.0, 1.5], [0.0, -0.5]])
    pyro.set_rng_seed(0)
    x = model.sample(NUM_POINTS)
    gaps = gap_decomposition(
        model, ExactPosterior(model), x, steps=FIT_STEPS, num_samples=BOUND_SAMPLES, seed=0
    )
    return model, x, gaps


@pytest.fixture(scope="module")
def correlated():
    """A non-orthogonal W: the posterior's precision Lambda has off-diagonal terms. The encoder
    is an untrained AmortizedGaussian, a member of the diagonal family far from its best."""
    model = _model([[1.0, 0.8], [0.5, 1.2], [1.0, 1.0], [0.3, -0.2]])
    pyro.set_rng_seed(0)
    x = model.sample(NUM_POINTS)
    torch.manual_seed(0)
    encoder = AmortizedGaussian(4, 2, hidden=(8,)).double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gaps = gap_decomposition(model, encoder, x, steps=FIT_STEPS, num_samples=BOUND_SAMPLES, seed=0)
    return model, x, gaps, state


def test_gaps_of_an_exact_diagonal_posterior_vanish(diagonal):
    _, _, gaps = diagonal
    # The exact posterior's ELBO is log p(x) draw by draw: no inference gap at all.
    assert gaps.inference_gap.per_point.abs().max().item() < 1e-9
    approximation, amortization = gaps.approximation_gap, gaps.amortization_gap
    assert -Z * approximation.stderr < approximation.mean < Z * approximation.stderr + FIT_TOLERANCE
    assert -Z * amortization.stderr - FIT_TOLERANCE < amortization.mean < Z * amortization.stderr


def test_approximation_gap_is_the_kl_to_the_best_diagonal_gaussian(correlated):
    # For a Gaussian posterior of precision Lambda the best diagonal Gaussian (reverse KL) has
    # variances 1 / Lambda_ii, and KL(q* || posterior) = 0.5 (sum log Lambda_ii - log det
    # Lambda), the same at every point.
    model, _, gaps, _ = correlated
    precision = _posterior_precision(model)
    expected = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)).item()
    approximation = gaps.approximation_gap
    assert approximation.mean > Z * approximation.stderr
    assert -Z * approximation.stderr < approximation.mean - expected
    assert approximation.mean - expected < Z * approximation.stderr + FIT_TOLERANCE


def test_amortization_gap_of_an_untrained_encoder_is_positive(correlated):
    amortization = correlated[2].amortization_gap
    assert amortization.mean > Z * amortization.stderr


def test_gaps_add_up_to_the_inference_gap_at_every_point(correlated):
    gaps = correlated[2]
    total = gaps.approximation_gap.per_point + gaps.amortization_gap.per_point
    torch.testing.assert_close(total, gaps.inference_gap.per_point, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        gaps.inference_gap.per_point,
        gaps.log_marginal.per_point - gaps.encoder.per_point,
        rtol=0,
        atol=1e-10,
    )


def test_log_marginal_is_exact_where_an_oracle_exists(correlated):
    model, x, gaps, _ = correlated
    assert gaps.reference == "exact"
    torch.testing.assert_close(gaps.log_marginal.per_point, model.log_marginal(x))
    assert float(gaps.log_marginal.per_point_stderr.abs().max()) == 0.0


def test_fitting_q_star_leaves_the_model_parameters_alone(correlated):
    model, _, _, state = correlated
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_importance_weighted_bound_narrows_the_approximation_gap(correlated):
    model, x, elbo_gaps, _ = correlated
    torch.manual_seed(0)
    encoder = AmortizedGaussian(4, 2, hidden=(8,)).double()
    iw_gaps = gap_decomposition(
        model, encoder, x, bound="iw", num_samples=50, steps=FIT_STEPS, seed=0
    )
    assert iw_gaps.bound == "iw"
    narrower = elbo_gaps.approximation_gap.mean - iw_gaps.approximation_gap.mean
    stderr = math.hypot(elbo_gaps.approximation_gap.stderr, iw_gaps.approximation_gap.stderr)
    assert narrower > Z * stderr


def test_log_marginal_falls_back_on_importance_sampling_without_an_oracle():
    # A plain-function linear-Gaussian model with a 3-D latent: no closed form the oracle
    # recognises, no enumeration, no quadrature (dimension > 2). Its log p(x) is known here.
    weight = torch.tensor(
        [[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.4, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64
    )
    reference = LinearGaussian.from_params(weight, torch.zeros(4), torch.full((4,), NOISE))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ weight.T, NOISE).to_event(1), obs=x)

    pyro.set_rng_seed(0)
    x = reference.sample(20)
    gaps = gap_decomposition(model, ExactPosterior(reference), x, steps=200, num_samples=20, seed=0)
    assert gaps.reference == "iw"
    error = gaps.log_marginal.per_point - reference.log_marginal(x)
    assert bool((error.abs() < Z * gaps.log_marginal.per_point_stderr).all())


def test_a_given_reference_is_used_as_log_marginal(diagonal):
    model, x, _ = diagonal
    exact = model.log_marginal(x)
    reference = Estimate(exact + 1.0, torch.full_like(exact, 0.1), 1000)
    gaps = gap_decomposition(
        model, ExactPosterior(model), x, reference=reference, steps=10, num_samples=2, seed=0
    )
    assert gaps.reference == "given"
    assert gaps.log_marginal is reference
    assert gaps.inference_gap.mean == pytest.approx(1.0)


def test_diagnose_attaches_the_decomposition_only_on_request(correlated):
    model, x, _, _ = correlated
    torch.manual_seed(0)
    encoder = AmortizedGaussian(4, 2, hidden=(8,)).double()
    assert diagnose(model, encoder, x, seed=0).gaps is None
    diagnosis = diagnose(model, encoder, x, seed=0, decompose_gap=True)
    assert isinstance(diagnosis.gaps, GapDecomposition)
    summary = json.loads(json.dumps(diagnosis.to_dict()))["gaps"]
    assert summary["inference_gap"]["mean"] == pytest.approx(diagnosis.gaps.inference_gap.mean)
    # The same exact log p(x) and the same encoder: the decomposition's inference gap is the
    # diagnosis' gap up to their Monte-Carlo errors, independent, from 100 and 16 draws per
    # point (so the latter's is sqrt(100 / 16) times the former's).
    slack = Z * diagnosis.gaps.inference_gap.stderr * math.sqrt(1 + 100 / 16)
    assert abs(diagnosis.gaps.inference_gap.mean - diagnosis.gap) < slack


def test_model_with_two_latent_sites_is_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Normal(x.new_zeros(()), 1.0))
            b = pyro.sample("b", dist.Normal(a, 1.0))
            pyro.sample("x", dist.Normal(b.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("b", dist.Normal(x.new_zeros(()), 1.0))

    with pytest.raises(ValueError, match=r"latent sites \['a', 'b'\]"):
        gap_decomposition(model, guide, torch.zeros(5, 2), steps=1)


@pytest.mark.parametrize(
    ("options", "match"),
    [({"bound": "kl"}, "bound"), ({"num_samples": 1}, "num_samples"), ({"lr": 0.0}, "lr")],
)
def test_bad_options_are_named(diagonal, options, match):
    model, x, _ = diagonal
    with pytest.raises(ValueError, match=match):
        gap_decomposition(model, ExactPosterior(model), x, **options)


def test_inference_gap_is_log_marginal_minus_the_encoder_bound():
    from inference import inference_gap

    def estimate(values, stderrs, num_samples):
        as_tensor = torch.tensor(values, dtype=torch.float64), torch.tensor(stderrs).double()
        return Estimate(*as_tensor, num_samples)

    reference = estimate([-1.0, -2.0], [0.3, 0.0], 100)
    encoder = estimate([-1.5, -2.25], [0.4, 0.1], 10)
    gap = inference_gap(reference, encoder)
    torch.testing.assert_close(gap.per_point, torch.tensor([0.5, 0.25], dtype=torch.float64))
    torch.testing.assert_close(gap.per_point_stderr, torch.tensor([0.5, 0.1], dtype=torch.float64))


def test_amortization_gap_is_a_deprecated_alias_of_inference_gap():
    from inference import amortization_gap, inference_gap

    reference = Estimate(torch.tensor([-1.0]), torch.tensor([0.0]), 100)
    encoder = Estimate(torch.tensor([-1.5]), torch.tensor([0.1]), 10)
    with pytest.warns(DeprecationWarning, match="inference_gap"):
        old = amortization_gap(reference, encoder)
    new = inference_gap(reference, encoder)
    assert torch.equal(old.per_point, new.per_point)
    assert torch.equal(old.per_point_stderr, new.per_point_stderr)
