"""The doubly reparameterised IWAE gradient (DReG, Tucker et al., 2019): the plain gradient's
expectation with a lower variance for the encoder, the plain gradient for the decoder, and
exactly zero for the encoder at the exact posterior.

Independent draws come from one call: a point repeated once per draw, each copy with its own
encoder output, whose gradient is that draw's encoder output-bias gradient
(:func:`benchmarks.dreg_snr.encoder_output_gradients`)."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from _pairs import ChainModel

from benchmarks.dreg_snr import encoder_output_gradients
from guides import AmortizedGaussian, BatchNormGaussian
from inference import CyclicalAnnealing, fit
from inference._programs import inspect_pair
from inference.training.objectives import IWAE
from lvm_models import AutoregressiveVAE, LinearGaussian
from lvm_models._nn import MIN_SCALE, output_layer

DRAWS = 4000
NOISE = 0.5


def orthogonal_model() -> LinearGaussian:
    """pPCA with orthogonal columns of W: the exact posterior is a diagonal Gaussian, so a
    linear mean-field encoder can be it."""
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(4, 2, generator=generator, dtype=torch.float64))
    weight = basis * torch.tensor([1.5, 0.8], dtype=torch.float64)
    bias = torch.randn(4, generator=generator, dtype=torch.float64)
    return LinearGaussian.from_params(weight, bias, NOISE)


def exact_encoder(model: LinearGaussian, offset: float = 0.0) -> AmortizedGaussian:
    """A linear AmortizedGaussian set to the exact posterior N(S W^T (x - b) / psi^2, S),
    S = (I + W^T W / psi^2)^-1 diagonal, its means shifted by ``offset`` and its scales
    narrowed by as much on the raw (softplus) scale: a guide near, not at, the posterior."""
    weight, bias = model.weight.detach(), model.bias.detach()
    variance = 1 / (1 + (weight**2).sum(0) / NOISE**2)  # (k,), the diagonal of S
    loc_weight = variance[:, None] * weight.T / NOISE**2  # (k, D)
    guide = AmortizedGaussian(4, 2, hidden=()).double()
    layer = output_layer(guide.encoder)
    raw_scale = torch.log(torch.expm1(variance.sqrt() - MIN_SCALE))  # softplus^-1
    with torch.no_grad():
        layer.weight.copy_(torch.cat([loc_weight, torch.zeros(2, 4, dtype=torch.float64)]))
        layer.bias.copy_(torch.cat([-loc_weight @ bias + offset, raw_scale - offset]))
    return guide


@pytest.fixture(scope="module")
def near_posterior():
    """The model, a guide near its posterior, and one of its points repeated DRAWS times."""
    model = orthogonal_model()
    torch.manual_seed(0)
    point = model.sample(1)
    return model, exact_encoder(model, offset=0.2), point.expand(DRAWS, -1)


def both_estimators(pair, num_particles: int) -> dict[str, torch.Tensor]:
    """(DRAWS, 4) encoder output-bias gradients of each estimator, from the same draws."""
    model, guide, copies = pair
    return {
        gradient: encoder_output_gradients(model, guide, copies, num_particles, gradient, seed=1)
        for gradient in ("plain", "dreg")
    }


def paired_z_scores(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The z-score of the mean difference of paired draws, per component."""
    difference = first - second
    return difference.mean(0) / (difference.std(0) / math.sqrt(difference.shape[0]))


@pytest.mark.parametrize("num_particles", [1, 10, 30])
def test_dreg_has_the_plain_gradients_expectation(near_posterior, num_particles):
    gradients = both_estimators(near_posterior, num_particles)
    z_scores = paired_z_scores(gradients["plain"], gradients["dreg"])
    assert bool((z_scores.abs() < 4).all()), z_scores
    # An expectation far from zero, so a biased estimator would show.
    stderr = gradients["dreg"].std(0) / math.sqrt(DRAWS)
    assert (gradients["dreg"].mean(0).abs() / stderr).min() > 10


@pytest.mark.parametrize("num_particles", [10, 30])
def test_dregs_encoder_gradient_has_a_lower_variance(near_posterior, num_particles):
    """Each component's variance well below the plain gradient's: not the plain estimator."""
    gradients = both_estimators(near_posterior, num_particles)
    ratio = gradients["dreg"].var(0) / gradients["plain"].var(0)
    assert bool((ratio < 0.5).all()), ratio


def test_dreg_has_the_plain_expectation_for_a_hierarchical_guide():
    """q(top) q(middle given top): the path through top into middle's mean is kept, so the
    estimator stays unbiased where the second site's distribution depends on the first."""
    pyro.clear_param_store()
    chain = ChainModel(data_dim=3, seed=0)
    torch.manual_seed(0)
    copies = chain.sample(1).expand(DRAWS, -1)
    info = inspect_pair(chain.model, chain.guide, copies)
    gradients = {}
    for gradient in ("plain", "dreg"):
        outputs = []
        handle = chain.encoder.register_forward_hook(
            lambda module, inputs, output, outputs=outputs: outputs.append(output)
        )
        pyro.set_rng_seed(1)
        loss = IWAE(10, gradient=gradient).loss(info)(chain.model, chain.guide, copies)
        handle.remove()
        gradients[gradient] = sum(torch.autograd.grad(loss, outputs))  # (DRAWS, 2)
    z_scores = paired_z_scores(gradients["plain"], gradients["dreg"])
    assert bool((z_scores.abs() < 4).all()), z_scores
    assert bool((gradients["dreg"].var(0) < gradients["plain"].var(0)).all())


@pytest.mark.parametrize("num_particles", [1, 10])
def test_dreg_gives_the_decoder_the_plain_gradient_draw_by_draw(near_posterior, num_particles):
    """theta's gradient is sum_k w~_k grad log p(x, z_k) in both: the same draws (the
    replays of DReG draw no random numbers) give the same loss and decoder gradient."""
    model, guide, copies = near_posterior
    x = copies[:50]
    info = inspect_pair(model, guide, x)
    results = []
    for gradient in ("plain", "dreg"):
        pyro.set_rng_seed(2)
        loss = IWAE(num_particles, gradient=gradient).loss(info)(model, guide, x)
        results.append([loss, *torch.autograd.grad(loss, list(model.parameters()))])
    for plain, dreg in zip(*results, strict=True):
        torch.testing.assert_close(dreg, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_particles", [1, 10])
def test_dregs_encoder_gradient_is_zero_at_the_exact_posterior(num_particles):
    """With q = p(z given x), log w_k = log p(x) for every z: no path gradient, every draw.
    The plain gradient keeps its score term, zero only on average."""
    model = orthogonal_model()
    guide = exact_encoder(model)
    torch.manual_seed(0)
    x = model.sample(20)
    info = inspect_pair(model, guide, x)
    norms = {}
    for gradient in ("plain", "dreg"):
        pyro.set_rng_seed(3)
        loss = IWAE(num_particles, gradient=gradient).loss(info)(model, guide, x)
        grads = torch.autograd.grad(loss, list(guide.parameters()))
        norms[gradient] = max(g.abs().max().item() for g in grads)
    assert norms["dreg"] < 1e-10
    assert norms["plain"] > 1e-2


def test_the_exact_encoder_is_the_posterior():
    """The premise of the test above: the encoder's Gaussian is LinearGaussian.posterior."""
    model = orthogonal_model()
    x = model.sample(5)
    layer = output_layer(exact_encoder(model).encoder)
    out = layer(x)
    posterior = model.posterior(x)
    torch.testing.assert_close(out[:, :2], posterior.mean)
    torch.testing.assert_close(
        (F.softplus(out[:, 2:]) + MIN_SCALE) ** 2, posterior.covariance_matrix.diagonal(0, -2, -1)
    )


@pytest.mark.parametrize(
    "weighting",
    [{"beta": 0.5}, {"kl_warmup_steps": 10}, {"kl_schedule": CyclicalAnnealing(cycles=2)}],
    ids=["beta", "warm-up", "cyclical"],
)
def test_dreg_under_a_kl_weight_other_than_one_is_refused(weighting):
    """With log w = log p(x | z) + beta (log p(z) - log q), DReG's coefficient w~^2 is biased."""
    x = torch.randn(8, 4)
    model, guide = LinearGaussian(4, 2), AmortizedGaussian(4, 2, hidden=())
    with pytest.raises(ValueError, match="gradient='dreg' is the doubly reparameterised"):
        fit(model, guide, x, steps=1, objective="iwae", gradient="dreg", **weighting)


def test_the_replays_leave_batch_norms_running_statistics_as_one_run_left_them():
    """DReG replays the guide in training mode; its BatchNorm must not count the batch twice."""
    model, x = LinearGaussian(4, 2), torch.randn(16, 4)
    statistics = []
    for gradient in ("plain", "dreg"):
        torch.manual_seed(0)
        guide = BatchNormGaussian(4, 2, hidden=(8,))
        info = inspect_pair(model, guide, x)
        IWAE(num_particles=3, gradient=gradient).loss(info)(model, guide, x)
        statistics.append(guide.batch_norm.running_mean.clone())
    assert torch.equal(statistics[0], statistics[1])


def test_dreg_trains_a_model_whose_forward_pass_reads_buffers():
    """A MADE's masks are buffers the backward pass needs as they were: DReG's replays must
    not write them (found by lvm collapse on the digits)."""
    x = (torch.rand(32, 6) < 0.5).float()
    model, guide = AutoregressiveVAE(6, 2, hidden=(8,)), AmortizedGaussian(6, 2, hidden=(8,))
    result = fit(model, guide, x, steps=3, objective="iwae", num_particles=3, gradient="dreg",
                 batch_size=16, seed=0, progress=False)  # fmt: skip
    assert all(math.isfinite(loss) for loss in result.history.losses)
