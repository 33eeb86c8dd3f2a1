from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from guides import AmortizedGaussian, PriorGuide
from inference import elbo, exact_log_marginal, fit
from lvm_models import AutoregressiveVAE, datasets


def _all_binary_vectors(data_dim: int) -> torch.Tensor:
    """Every x in {0, 1}^D: shape (2^D, D), float64."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=data_dim)), dtype=torch.float64)


def _sharpened_model(data_dim: int, latent_dim: int, hidden: tuple[int, ...]) -> AutoregressiveVAE:
    """A float64 model with weights scaled up, so pixels depend strongly on each other and z."""
    model = AutoregressiveVAE(data_dim, latent_dim, hidden=hidden).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3.0)
    return model


def test_sampling_gives_binary_data_of_shape_num_data_by_data_dim():
    x = AutoregressiveVAE(6, 2, hidden=(16,)).sample(50)
    assert x.shape == (50, 6)
    assert set(x.unique().tolist()) <= {0.0, 1.0}


@settings(max_examples=25)
@given(
    data_dim=st.integers(2, 8),
    hidden=st.lists(st.integers(1, 12), min_size=1, max_size=2),
    pixel=st.data(),
    seed=st.integers(0, 2**16),
)
def test_logit_of_pixel_d_does_not_depend_on_pixels_d_and_after(data_dim, hidden, pixel, seed):
    d = pixel.draw(st.integers(0, data_dim - 1))
    generator = torch.Generator().manual_seed(seed)
    model = AutoregressiveVAE(data_dim, 2, hidden=tuple(hidden)).double()
    z = torch.randn(2, generator=generator, dtype=torch.float64)
    x = torch.bernoulli(torch.full((data_dim,), 0.5, dtype=torch.float64), generator=generator)
    flipped = x.clone()
    flipped[d:] = 1 - flipped[d:]
    logits, flipped_logits = model.decoder(x, z), model.decoder(flipped, z)
    torch.testing.assert_close(flipped_logits[: d + 1], logits[: d + 1], rtol=0, atol=0)


def test_every_logit_depends_on_z():
    model = AutoregressiveVAE(5, 2, hidden=(16,)).double()
    x = torch.zeros(5, dtype=torch.float64)
    z = torch.zeros(2, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda z: model.decoder(x, z), z)  # (D, k)
    assert bool((jacobian.abs().sum(-1) > 0).all())


def test_probabilities_sum_to_one_over_all_binary_vectors():
    model = _sharpened_model(5, 2, hidden=(16, 16))
    z = torch.randn(3, 1, 2, dtype=torch.float64)
    log_prob = model.likelihood(z).log_prob(_all_binary_vectors(5))  # (3, 32)
    torch.testing.assert_close(
        torch.logsumexp(log_prob, -1), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6
    )


def test_sample_frequencies_match_probabilities():
    num_samples = 20_000
    model = _sharpened_model(3, 2, hidden=(8,))
    likelihood = model.likelihood(torch.tensor([0.5, -1.0], dtype=torch.float64))
    outcomes = _all_binary_vectors(3)  # (8, 3)
    probabilities = likelihood.log_prob(outcomes).exp()  # (8,)
    samples = likelihood.sample((num_samples,))  # (S, 3)
    frequencies = (samples.unsqueeze(1) == outcomes).all(-1).double().mean(0)  # (8,)
    standard_errors = (probabilities * (1 - probabilities) / num_samples).sqrt()
    assert bool(((frequencies - probabilities).abs() <= 4 * standard_errors).all()), (
        frequencies,
        probabilities,
    )


def test_log_prob_broadcasts_data_against_particles_of_z():
    model = AutoregressiveVAE(6, 2, hidden=(16,)).double()
    x = model.sample(5)  # (N, D)
    z = torch.randn(4, 5, 2, dtype=torch.float64)  # (K, N, k)
    log_prob = model.likelihood(z).log_prob(x)
    assert log_prob.shape == (4, 5)
    torch.testing.assert_close(
        log_prob, torch.stack([model.likelihood(zk).log_prob(x) for zk in z])
    )


def test_ignore_latent_makes_log_prob_independent_of_z():
    model = _sharpened_model(6, 2, hidden=(16,))
    x = model.sample(5)
    z, other_z = torch.randn(2, 5, 2, dtype=torch.float64)
    assert not torch.allclose(
        model.likelihood(z).log_prob(x), model.likelihood(other_z).log_prob(x)
    )
    model.ignore_latent()
    torch.testing.assert_close(
        model.likelihood(z).log_prob(x), model.likelihood(other_z).log_prob(x), rtol=0, atol=0
    )


def test_elbo_with_prior_guide_is_tight_once_the_latent_is_ignored():
    model = _sharpened_model(4, 1, hidden=(8,))
    model.ignore_latent()
    x = _all_binary_vectors(4)
    estimate = elbo(model, PriorGuide(model), x, num_particles=10, seed=0)
    assert float(estimate.per_point_stderr.max()) < 1e-12
    torch.testing.assert_close(estimate.per_point, exact_log_marginal(model, x), rtol=0, atol=1e-6)


def test_exact_log_marginal_sums_to_one_over_all_binary_vectors():
    model = _sharpened_model(3, 1, hidden=(8,))
    log_marginal = exact_log_marginal(model, _all_binary_vectors(3))  # quadrature over z
    assert torch.logsumexp(log_marginal, 0).item() == pytest.approx(0.0, abs=1e-4)


def test_empty_hidden_is_named():
    with pytest.raises(ValueError, match="hidden must be one or more positive widths"):
        AutoregressiveVAE(4, 1, hidden=())


def test_fit_on_binarized_digits_lowers_the_loss():
    x = datasets.binarized_digits().x[:500]
    model = AutoregressiveVAE(64, 2, hidden=(64,))
    guide = AmortizedGaussian(64, 2, hidden=(32,))
    result = fit(model, guide, x, steps=200, batch_size=100, lr=3e-3, seed=0, progress=False)
    losses = result.history.losses
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20
