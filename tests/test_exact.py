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

    with pytest.raises(ValueError, match=r"no vectorised pyro.plate of size N=4"):
        exact_log_marginal(no_plate, torch.randn(4, 1))


def test_quadrature_refines_a_grid_that_starts_too_coarse(monkeypatch):
    import inference.estimators._quadrature

    monkeypatch.setattr(inference.estimators._quadrature, "_NODES_PER_SD", 0.2)  # five sds per step
    model = linear_gaussian(6, 2, 0.3)
    x = model.sample(10)
    estimate = exact_log_marginal(_as_plain_function(model), x)
    torch.testing.assert_close(estimate, model.log_marginal(x), rtol=0, atol=1e-6)


def test_quadrature_gives_up_with_a_clear_error_when_the_grid_limit_is_reached(monkeypatch):
    import inference.estimators._quadrature

    monkeypatch.setitem(inference.estimators._quadrature._MAX_NODES, 2, 100)
    model = linear_gaussian(6, 2, 0.3)
    with pytest.raises(NoExactValueError, match="nodes"):
        exact_log_marginal(_as_plain_function(model), model.sample(5))


# --- The oracle is right or refuses: brute force on multimodal, far and tilted posteriors ---


def _standard_normal_latent(dim: int):
    if dim == 1:
        return dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    return dist.Normal(torch.zeros(dim, dtype=torch.float64), 1.0).to_event(1)


def _one_site_model(dim: int, log_likelihood, tilt=None):
    """z ~ N(0, I_dim), an optional factor tilt(z), and x observed through log_likelihood."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", _standard_normal_latent(dim))
            if tilt is not None:
                pyro.factor("tilt", tilt(z))
            pyro.factor("x", log_likelihood(z, x))  # an observed site with any density

    return model


def _brute_force(dim: int, log_likelihood, x, half_width, nodes, tilt=None):
    """log integral of N(z; 0, I) exp(tilt(z)) p(x given z) dz on a fixed fine grid: (N,)."""
    axis = torch.linspace(-half_width, half_width, nodes, dtype=torch.float64)
    if dim == 1:
        grid, log_cell = axis.unsqueeze(-1), math.log(axis[1] - axis[0])
        z = grid  # (M, 1): broadcasts against (N,) as a batch of one latent per node
    else:
        grid, log_cell = torch.cartesian_prod(axis, axis), 2 * math.log(axis[1] - axis[0])
        z = grid.unsqueeze(1)  # (M, 1, 2)
    log_joint = _standard_normal_latent(dim).log_prob(z) + log_likelihood(z, x)
    if tilt is not None:
        log_joint = log_joint + tilt(z)
    return torch.logsumexp(log_joint, 0) + log_cell  # (N,)


def _squared(z, x):  # x ~ N(z^2, 0.01^2): modes at +-sqrt(x)
    return dist.Normal(z**2, 0.01).log_prob(x[:, 0])


def _squared_first(z, x):  # x ~ N((z0^2, z1), 0.1^2 I): modes at z0 = +-sqrt(x0)
    loc = torch.stack([z[..., 0] ** 2, z[..., 1]], dim=-1)
    return dist.Normal(loc, 0.1).to_event(1).log_prob(x)


def _ring(z, x):  # x ~ N(|z|, 0.1^2): the posterior is a ring
    return dist.Normal(z.norm(dim=-1), 0.1).log_prob(x[:, 0])


def _shifted(z, x):  # x ~ N(z, 0.5^2)
    return dist.Normal(z, 0.5).log_prob(x[:, 0])


def _shifted_2d(z, x):  # x ~ N(z, 0.5^2 I)
    return dist.Normal(z, 0.5).to_event(1).log_prob(x)


HARD_POSTERIORS = {
    "symmetric modes, 1-D": (1, _squared, [[1.0], [2.25], [0.49]], None, 4.0),
    "symmetric modes, 2-D": (2, _squared_first, [[1.0, 0.3], [2.0, -1.0]], None, 4.0),
    "ring, 2-D": (2, _ring, [[2.0], [0.5], [3.5]], None, 6.0),
    "far from the prior": (1, _shifted, [[20.0], [0.0], [-7.0]], None, 25.0),
    "tilted": (1, _shifted, [[1.0], [30.0]], lambda z: 30.0 * z, 45.0),
    "far from the prior, 2-D": (2, _shifted_2d, [[20.0, -15.0], [0.5, 1.0]], None, 25.0),
    "tilted, 2-D": (
        2,
        _shifted_2d,
        [[1.0, -2.0]],
        lambda z: 30.0 * z[..., 0] - 20 * z[..., 1],
        40.0,
    ),
}


@pytest.mark.parametrize("case", HARD_POSTERIORS, ids=list(HARD_POSTERIORS))
def test_quadrature_matches_a_brute_force_grid_on_hard_posteriors(case):
    dim, log_likelihood, data, tilt, half_width = HARD_POSTERIORS[case]
    x = torch.tensor(data, dtype=torch.float64)
    nodes = 400_001 if dim == 1 else 3001
    expected = _brute_force(dim, log_likelihood, x, half_width, nodes, tilt)
    estimate = exact_log_marginal(_one_site_model(dim, log_likelihood, tilt), x)
    torch.testing.assert_close(estimate, expected, rtol=0, atol=1e-3)


def test_quadrature_far_from_the_prior_matches_the_closed_form_whatever_the_batch():
    x = torch.tensor([[20.0], [0.0], [-3.0]], dtype=torch.float64)
    model = _one_site_model(1, _shifted)
    closed_form = dist.Normal(0.0, math.sqrt(1.25)).log_prob(x[:, 0])
    together = exact_log_marginal(model, x)
    alone = torch.cat([exact_log_marginal(model, x[n : n + 1]) for n in range(3)])
    torch.testing.assert_close(together, closed_form, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("frequency", "noise"), [(2, 0.3), (5, 0.1), (20, 0.05), (50, 0.01)])
def test_quadrature_of_many_narrow_modes_is_right_or_refuses(frequency, noise):
    def wiggle(z, x):  # x ~ N(sin(f z), noise^2): about 2 f / pi modes inside the prior
        return dist.Normal(torch.sin(frequency * z), noise).log_prob(x[:, 0])

    x = torch.tensor([[0.3], [0.9], [-0.6]], dtype=torch.float64)
    expected = _brute_force(1, wiggle, x, 8.0, 2_000_001)
    try:
        estimate = exact_log_marginal(_one_site_model(1, wiggle), x)
    except NoExactValueError:
        return
    torch.testing.assert_close(estimate, expected, rtol=0, atol=1e-3)


class _StudentTNoise(LinearGaussian):
    """A user's subclass: the same latent, Student-t noise. The Gaussian closed form it
    inherits is wrong for it."""

    def likelihood(self, z):
        loc = z @ self.weight.T + self.bias
        return dist.StudentT(2.0, loc, self.noise_scale).to_event(1)


def test_a_subclass_does_not_inherit_the_closed_form_of_its_parent():
    parent = linear_gaussian(3, 2, 0.5)
    model = _StudentTNoise.from_params(parent.weight, parent.bias, parent.noise_scale)
    x = parent.sample(4) * 3
    expected = _brute_force(2, lambda z, x: model.likelihood(z).log_prob(x), x, 8.0, 2001)
    with pytest.warns(UserWarning, match="differs from the certified oracle"):
        estimate = exact_log_marginal(model, x)
    torch.testing.assert_close(estimate, expected, rtol=0, atol=1e-3)


def test_a_subclass_without_another_route_is_refused_by_name():
    parent = linear_gaussian(5, 3, 0.5)
    model = _StudentTNoise.from_params(parent.weight, parent.bias, parent.noise_scale)
    with pytest.raises(NoExactValueError, match="_StudentTNoise is not one of the library"):
        exact_log_marginal(model, parent.sample(3))


def _poisson_latent_pair():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            count = pyro.sample("count", dist.Poisson(torch.tensor(3.0, dtype=torch.float64)))
            pyro.sample("x", dist.Normal(count, 1.0), obs=x[:, 0])

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("count", dist.Poisson(x[:, 0].clamp_min(0.1)))

    return model, guide


def test_a_discrete_latent_without_enumerate_support_is_refused_by_name():
    model, _ = _poisson_latent_pair()
    with pytest.raises(NoExactValueError, match=r"\['count'\] have no finite support"):
        exact_log_marginal(model, torch.tensor([[2.0], [4.0]], dtype=torch.float64))


def test_estimators_run_without_an_exact_row_on_a_poisson_latent():
    from inference import check_bounds, compare, diagnose

    model, guide = _poisson_latent_pair()
    x = torch.tensor([[2.0], [4.0], [1.0]], dtype=torch.float64)
    comparison = compare(model, guide, x, num_samples=(1, 10), seed=0)
    assert "no finite support" in comparison.exact_note
    assert diagnose(model, guide, x, seed=0).exact is None
    assert check_bounds(model, guide, x, num_samples=(1, 10), particles_per_row=200).exact is None
