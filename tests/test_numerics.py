"""Numerics at the extremes: log weights spanning 1e4 nats, float32 against float64, dtypes."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from _pairs import linear_gaussian

import inference.estimators._compiled
import inference.estimators.bounds
from guides import AmortizedGaussian, ExactPosterior, PriorGuide
from inference import elbo, iw_log_marginal
from inference.estimators.bounds import (
    PSIS_MAX_TAIL,
    _psis_tail_size,
    _RunningLogMeanExp,
    weight_diagnostics,
)

SHARP_NOISE = 0.01  # p(x given z) = N(z, 0.01^2): log weights under the prior span ~1e4 nats
OBSERVED = 3.0


def sharp_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(z.unsqueeze(-1), SHARP_NOISE).to_event(1), obs=x)


def prior_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_running_log_mean_exp_is_exact_over_1e4_nats(dtype):
    log_weights = torch.linspace(-1e4, 0.0, 3001, dtype=dtype).reshape(-1, 1)
    log_weights = log_weights[torch.randperm(3001)]  # the largest arrives in a middle chunk
    running = _RunningLogMeanExp(tail_size=0)
    for chunk in log_weights.split(7):
        running.update(chunk)
    expected = torch.logsumexp(log_weights.double(), 0) - math.log(3001)
    torch.testing.assert_close(running.log_mean_exp().double(), expected, rtol=1e-6, atol=0)


def test_points_whose_weights_are_all_zero_get_minus_infinity_not_nan():
    running = _RunningLogMeanExp(tail_size=0)
    running.update(torch.full((4, 2), -math.inf))
    running.update(torch.tensor([[-math.inf, -1e4], [-math.inf, -2e4]]))
    log_mean = running.log_mean_exp()
    assert log_mean[0] == -math.inf
    torch.testing.assert_close(log_mean[1], torch.tensor(-1e4 - math.log(6)))
    assert running.ess().tolist() == [0.0, 1.0]


def test_the_psis_tail_kept_per_point_stops_at_the_cap_for_a_million_weights():
    num_samples, chunk = 10**6, 10**5
    tail_size = _psis_tail_size(num_samples)
    assert tail_size == PSIS_MAX_TAIL + 1  # psis_diagnostic's 3 sqrt(K) would keep 3001
    log_weights = torch.randn(num_samples, 3, generator=torch.Generator().manual_seed(0))
    running = _RunningLogMeanExp(tail_size=tail_size)
    for piece in log_weights.double().split(chunk):
        running.update(piece)
        # At most the tail and fewer than tail_size rows waiting to join it, whatever K.
        assert running._pending_rows < tail_size
        assert running._tail is None or running._tail.shape == (tail_size, 3)
    running.khat()
    expected = log_weights.double().topk(tail_size, dim=0).values
    assert torch.equal(running._tail, expected)


@pytest.mark.parametrize("shape", [0.5, 0.9])
@pytest.mark.parametrize("num_samples", [10_000, 100_000], ids=["below-cap", "above-cap"])
def test_khat_recovers_the_shape_of_pareto_weights(shape, num_samples):
    # w ~ Pareto(1, 1 / k): log w = k E with E ~ Exp(1), and every tail of w is a generalized
    # Pareto of shape k.
    num_points = 20
    generator = torch.Generator().manual_seed(0)
    log_weights = shape * torch.empty(num_samples, num_points, dtype=torch.float64).exponential_(
        generator=generator
    )
    _, khat = weight_diagnostics(log_weights)
    tail = _psis_tail_size(num_samples) - 1  # 300 below the cap, 512 above
    # The fit's asymptotic standard error (1 + k) / sqrt(M), over 20 independent points.
    stderr = (1 + shape) / math.sqrt(tail) / math.sqrt(num_points)
    assert abs(khat.mean().item() - shape) < 4 * stderr


def _fixed_log_weights(rows: torch.Tensor):
    """A stand-in for log_importance_weights that serves the next rows of a fixed (R K, N)."""
    served = [0]

    def log_importance_weights(model, guide, inputs, num_particles, info):
        start = served[0]
        served[0] += num_particles
        return rows[start : start + num_particles]

    return log_importance_weights, served


@pytest.mark.parametrize("num_replicates", [1, 3])
@pytest.mark.parametrize("num_samples", [8, 50], ids=["K-below-chunk", "K-above-chunk"])
def test_replicates_streamed_in_chunks_give_the_hand_computed_estimate(
    num_samples, num_replicates, monkeypatch
):
    model = linear_gaussian(data_dim=4, latent_dim=2)
    x = model.sample(5)
    generator = torch.Generator().manual_seed(0)
    rows = 3 * torch.randn(num_replicates * num_samples, 5, generator=generator).double()
    fake, served = _fixed_log_weights(rows)
    monkeypatch.setattr(inference.estimators._compiled, "log_importance_weights", fake)
    # Chunks of 20 particles: two whole replicates of 8 at a time, or a replicate of 50 in
    # pieces of 20, 20 and 10.
    estimate = iw_log_marginal(
        model,
        PriorGuide(model),
        x,
        num_samples=num_samples,
        num_replicates=num_replicates,
        chunk_size=20,
    )
    assert served[0] == num_replicates * num_samples
    grouped = rows.reshape(num_replicates, num_samples, 5)  # (R, K, N)
    replicates = torch.logsumexp(grouped, 1) - math.log(num_samples)  # (R, N)
    if num_replicates == 1:
        weights = (rows - rows.max(0).values).exp()
        ess = weights.sum(0) ** 2 / (weights**2).sum(0)
        stderr = ((num_samples / ess - 1) / num_samples).sqrt()  # the delta method
    else:
        stderr = replicates.std(0) / math.sqrt(num_replicates)
    torch.testing.assert_close(estimate.per_point, replicates.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(estimate.per_point_stderr, stderr, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iw_estimate_over_weights_spanning_1e4_nats_is_within_its_error_of_exact(dtype):
    x = torch.full((1, 1), OBSERVED, dtype=dtype)
    exact = dist.Normal(0.0, math.sqrt(1 + SHARP_NOISE**2)).log_prob(torch.tensor(OBSERVED))
    # Small chunks: the running maximum grows many times over the stream.
    estimate = iw_log_marginal(
        sharp_model, prior_guide, x, num_samples=200000, chunk_size=5000, seed=1
    )
    assert abs(estimate.mean - exact.item()) < 4 * estimate.stderr, estimate.mean


def test_dtype_option_computes_in_float64_and_leaves_the_modules_as_they_were():
    model = linear_gaussian(data_dim=4, latent_dim=2).float()
    guide = ExactPosterior(model)
    x = model.sample(5)
    estimate = elbo(model, guide, x, num_particles=3, dtype=torch.float64)
    assert estimate.per_point.dtype == torch.float64
    assert model.weight.dtype == torch.float32
    # With the exact posterior every log weight is log p(x): float64 makes that exact.
    reference = model.double().log_marginal(x.double())
    torch.testing.assert_close(estimate.per_point, reference.detach(), rtol=0, atol=1e-10)


def test_dtype_option_runs_an_encoder_in_float64_and_restores_it():
    model = linear_gaussian(data_dim=4, latent_dim=2).float()
    guide = AmortizedGaussian(4, 2, hidden=(8,))
    before = [p.detach().clone() for p in guide.parameters()]
    estimate = iw_log_marginal(model, guide, model.sample(5), num_samples=10, dtype=torch.float64)
    assert estimate.per_point.dtype == torch.float64
    for after, original in zip(guide.parameters(), before):
        assert after.dtype == torch.float32 and torch.equal(after.detach(), original)


def test_prior_guide_shares_the_model_and_is_cast_once():
    model = linear_gaussian(data_dim=4, latent_dim=2).float()
    estimate = elbo(model, PriorGuide(model), model.sample(3), dtype=torch.float64)
    assert estimate.per_point.dtype == torch.float64 and model.weight.dtype == torch.float32


def test_an_unsupported_dtype_is_named():
    model = linear_gaussian(data_dim=4, latent_dim=2)
    with pytest.raises(ValueError, match="dtype must be None, torch.float32 or torch.float64"):
        elbo(model, PriorGuide(model), model.sample(3), dtype=torch.float16)


def test_khat_of_an_exact_proposal_in_float32_is_minus_infinity_not_a_crash():
    # Weights equal up to float32 round-off used to reach the Pareto fit and divide by zero.
    from lvm_models import LinearGaussian

    torch.manual_seed(0)
    model = LinearGaussian(64, 16)
    with torch.no_grad():
        model.weight.normal_()
    x = model.sample(100)
    estimate = iw_log_marginal(model, ExactPosterior(model), x, num_samples=5000, seed=0)
    assert bool((estimate.khat == -math.inf).all())
    torch.testing.assert_close(estimate.per_point, model.log_marginal(x).to(estimate.per_point))


def test_dtype_option_gives_the_callers_tensors_back_bit_for_bit():
    # float64 -> float32 -> float64 would round a float64 buffer; the originals are put back.
    from lvm_models import GaussianVAE

    torch.manual_seed(0)
    model, guide = GaussianVAE(3, 2, hidden=(4,)).double(), AmortizedGaussian(3, 2).double()
    model.register_buffer("fine", torch.tensor(1.0 + 1e-12, dtype=torch.float64))
    before = {name: t.clone() for name, t in model.state_dict().items()}
    parameters = list(model.parameters())
    elbo(model, guide, torch.randn(4, 3, dtype=torch.float64), dtype=torch.float32, seed=0)
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == before[name].dtype and torch.equal(tensor, before[name]), name
    assert all(a is b for a, b in zip(parameters, model.parameters()))


def test_dtype_option_under_inference_mode_leaves_the_modules_trainable():
    from inference import fit
    from lvm_models import GaussianVAE

    torch.manual_seed(0)
    model, guide = GaussianVAE(3, 2, hidden=(4,)), AmortizedGaussian(3, 2, hidden=(4,))
    x = torch.randn(8, 3)
    with torch.inference_mode():
        elbo(model, guide, x, dtype=torch.float64, seed=0)
    assert not any(p.is_inference() for p in [*model.parameters(), *guide.parameters()])
    losses = fit(model, guide, x, steps=3, seed=0, progress=False).history.losses
    assert all(math.isfinite(loss) for loss in losses)


def test_dtype_option_casts_networks_registered_with_pyro_module_in_a_plain_function():
    torch.manual_seed(0)
    decoder, encoder = torch.nn.Linear(2, 3), torch.nn.Linear(3, 4)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = encoder(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    pyro.clear_param_store()
    x = torch.randn(5, 3)
    low = elbo(model, guide, x, num_particles=4000, seed=0)
    high = elbo(model, guide, x, num_particles=4000, seed=0, dtype=torch.float64)
    assert high.per_point.dtype == torch.float64 and decoder.weight.dtype == torch.float32
    # Different draws in the two dtypes: equal within the two standard errors.
    assert bool(((low.per_point - high.per_point).abs() <= 4 * (low.stderr + high.stderr)).all())


def test_data_overflowing_float32_gets_a_finite_value_in_float64():
    from lvm_models import LinearGaussian

    model = LinearGaussian(4, 2)
    guide = AmortizedGaussian(4, 2, hidden=(4,))
    x = torch.full((2, 4), 3e19)
    estimate = iw_log_marginal(model, guide, x, num_samples=4, seed=0, dtype=torch.float64)
    assert bool(torch.isfinite(estimate.per_point).all())
