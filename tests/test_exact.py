from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from _pairs import linear_gaussian

from inference import NoExactValueError, exact_log_marginal
from lvm_models import GaussianMixture, GaussianVAE, LinearGaussian


def _as_plain_function(model: LinearGaussian):
    """The same linear-Gaussian model as a user's function, with its own site names."""

    def user_model(x):
        with pyro.plate("data", x.shape[0]):
            code = pyro.sample("code", dist.Normal(x.new_zeros(model.latent_dim), 1.0).to_event(1))
            loc = code @ model.weight.T + model.bias
            pyro.sample("pixels", dist.Normal(loc, model.noise_scale).to_event(1), obs=x)

    return user_model


def test_model_with_closed_form_uses_it():
    model = linear_gaussian(4, 2, 0.5)
    x = model.sample(10)
    torch.testing.assert_close(exact_log_marginal(model, x), model.log_marginal(x))


@pytest.mark.parametrize("latent_dim", [1, 2])
@pytest.mark.parametrize("noise", [1.0, 0.01])
def test_quadrature_matches_linear_gaussian_closed_form(latent_dim, noise):
    model = linear_gaussian(30, latent_dim, noise)
    x = model.sample(20)
    estimate = exact_log_marginal(_as_plain_function(model), x)
    torch.testing.assert_close(estimate, model.log_marginal(x), rtol=0, atol=1e-6)


def test_quadrature_handles_a_positive_latent_through_its_unconstrained_coordinate():
    # z ~ Gamma(nu/2, nu/2), x given z ~ N(mu, sigma^2 / z): x is Student-t(nu, mu, sigma).
    nu, mu, sigma = 3.0, 0.5, 2.0

    def scale_mixture(x):
        with pyro.plate("data", x.shape[0]):
            precision = pyro.sample("precision", dist.Gamma(nu / 2, nu / 2))
            scale = sigma / precision.sqrt()
            pyro.sample("x", dist.Normal(mu, scale.unsqueeze(-1)).to_event(1), obs=x)

    x = torch.linspace(-20, 20, 9, dtype=torch.float64).unsqueeze(-1)
    expected = dist.StudentT(nu, mu, sigma).log_prob(x.squeeze(-1))
    torch.testing.assert_close(exact_log_marginal(scale_mixture, x), expected, rtol=0, atol=1e-6)


def test_quadrature_of_a_decoder_that_ignores_z_is_the_decoder_gaussian():
    model = GaussianVAE(3, 2, hidden=(8,), covariance="full").double()
    covariance = torch.tensor(
        [[2.0, 0.9, 0.1], [0.9, 1.0, 0.3], [0.1, 0.3, 0.5]], dtype=torch.float64
    )
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    model.set_collapsed(mean, covariance)
    x = model.sample(15)
    expected = dist.MultivariateNormal(mean, covariance).log_prob(x)
    torch.testing.assert_close(exact_log_marginal(model, x), expected, rtol=0, atol=1e-6)


def test_quadrature_of_a_nonlinear_decoder_matches_a_brute_force_grid():
    model = GaussianVAE(4, 2, hidden=(16, 16)).double()
    x = model.sample(5)
    axis = torch.linspace(-9.0, 9.0, 1201, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # (M, 2) on a fixed box, independent of the oracle
    with torch.no_grad():
        log_joint = model.prior().log_prob(grid).unsqueeze(-1) + model.likelihood(
            grid.unsqueeze(1)
        ).log_prob(x)  # (M, N)
    brute_force = torch.logsumexp(log_joint, 0) + 2 * math.log(axis[1] - axis[0])
    torch.testing.assert_close(exact_log_marginal(model, x), brute_force, rtol=0, atol=1e-3)


def test_enumeration_matches_the_mixture_closed_form():
    mixture = GaussianMixture.from_params(
        torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64),
        torch.randn(3, 2, dtype=torch.float64) * 3,
        torch.rand(3, 2, dtype=torch.float64) + 0.3,
    )

    def user_mixture(x):
        with pyro.plate("data", x.shape[0]):
            label = pyro.sample("label", dist.Categorical(logits=mixture.logits))
            pyro.sample(
                "obs", dist.Normal(mixture.means[label], mixture.scales[label]).to_event(1), obs=x
            )

    x = mixture.sample(25)
    torch.testing.assert_close(exact_log_marginal(user_mixture, x), mixture.log_marginal(x))


def test_enumeration_sums_out_a_chain_of_discrete_latents():
    first_probs = torch.tensor([0.2, 0.8], dtype=torch.float64)
    transition = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]], dtype=torch.float64)
    locs = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)

    def chain(x):
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Categorical(first_probs))
            b = pyro.sample("b", dist.Categorical(transition[a]))
            pyro.sample("x", dist.Normal((locs[b] + a).unsqueeze(-1), 1.0).to_event(1), obs=x)

    x = torch.tensor([[-1.0], [0.5], [2.5]], dtype=torch.float64)
    expected = torch.stack(
        [
            torch.logsumexp(
                torch.stack(
                    [
                        first_probs[a].log()
                        + transition[a, b].log()
                        + dist.Normal(locs[b] + a, 1.0).log_prob(point[0])
                        for a, b in itertools.product(range(2), range(3))
                    ]
                ),
                0,
            )
            for point in x
        ]
    )
    torch.testing.assert_close(exact_log_marginal(chain, x), expected)


def test_no_route_names_why_each_failed_for_a_high_dimensional_latent():
    model = _as_plain_function(linear_gaussian(5, 3, 1.0))
    with pytest.raises(
        NoExactValueError, match=r"enumeration: .*'code'.*quadrature: .*dimension 3 > 2"
    ):
        exact_log_marginal(model, torch.randn(4, 5, dtype=torch.float64))


def test_no_route_names_why_each_failed_for_mixed_latents():
    def mixed(x):
        with pyro.plate("data", x.shape[0]):
            label = pyro.sample("label", dist.Bernoulli(0.5))
            shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal((label + shift).unsqueeze(-1), 1.0).to_event(1), obs=x)

    with pytest.raises(NoExactValueError, match=r"'shift'.*not discrete.*'label'.*discrete"):
        exact_log_marginal(mixed, torch.randn(4, 1))


def test_model_without_data_plate_is_rejected_by_name():
    def no_plate(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0).expand(x.shape).to_event(2), obs=x)

    with pytest.raises(ValueError, match=r"no pyro.plate\('data'"):
        exact_log_marginal(no_plate, torch.randn(4, 1))


def test_quadrature_refines_the_points_a_coarse_grid_cannot_resolve(monkeypatch):
    import inference.exact

    monkeypatch.setitem(inference.exact._FINAL_POINTS, 2, 7)  # far too coarse to start with
    model = linear_gaussian(6, 2, 0.3)
    x = model.sample(10)
    estimate = exact_log_marginal(_as_plain_function(model), x)
    torch.testing.assert_close(estimate, model.log_marginal(x), rtol=0, atol=1e-6)


def test_quadrature_gives_up_with_a_clear_error_when_refinement_is_exhausted(monkeypatch):
    import inference.exact

    monkeypatch.setitem(inference.exact._FINAL_POINTS, 2, 5)
    monkeypatch.setitem(inference.exact._MAX_POINTS, 2, 5)
    model = linear_gaussian(6, 2, 0.3)
    with pytest.raises(NoExactValueError, match="quadrature did not converge"):
        exact_log_marginal(_as_plain_function(model), model.sample(5))
