from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA, FactorAnalysis

from inference import NoExactValueError, exact_log_marginal
from lvm_models import LinearGaussian, datasets, ppca_max_likelihood


@pytest.fixture(scope="module")
def correlated() -> np.ndarray:
    return datasets.correlated_gaussian(num_data=500, data_dim=6, seed=1).x.double().numpy()


def _dense_marginal(model: LinearGaussian) -> torch.distributions.MultivariateNormal:
    covariance = model.weight @ model.weight.T + torch.diag(model.noise_scale**2)
    return torch.distributions.MultivariateNormal(model.bias, covariance)


def test_log_marginal_equals_sklearn_factor_analysis(correlated):
    fa = FactorAnalysis(n_components=2, random_state=0).fit(correlated)
    model = LinearGaussian.from_params(fa.components_.T, fa.mean_, np.sqrt(fa.noise_variance_))
    ours = model.log_marginal(torch.from_numpy(correlated)).detach().numpy()
    np.testing.assert_allclose(ours, fa.score_samples(correlated), rtol=1e-5)


def test_isotropic_log_marginal_equals_sklearn_pca(correlated):
    pca = PCA(n_components=2).fit(correlated)
    weight = pca.components_.T * np.sqrt(pca.explained_variance_ - pca.noise_variance_)
    model = LinearGaussian.from_params(weight, pca.mean_, np.sqrt(pca.noise_variance_))
    assert model.noise == "isotropic"
    ours = model.log_marginal(torch.from_numpy(correlated)).detach().numpy()
    np.testing.assert_allclose(ours, pca.score_samples(correlated), rtol=1e-5)


def test_closed_form_ppca_fit_is_sklearn_pca_with_maximum_likelihood_variances(correlated):
    num_data = correlated.shape[0]
    pca = PCA(n_components=2).fit(correlated)
    # scikit-learn divides by N - 1; the maximum-likelihood estimate divides by N.
    variances = pca.explained_variance_ * (num_data - 1) / num_data
    noise_variance = pca.noise_variance_ * (num_data - 1) / num_data
    weight = pca.components_.T * np.sqrt(variances - noise_variance)
    reference = LinearGaussian.from_params(weight, pca.mean_, np.sqrt(noise_variance))
    fitted = ppca_max_likelihood(torch.from_numpy(correlated), latent_dim=2)
    x = torch.from_numpy(correlated)
    torch.testing.assert_close(fitted.log_marginal(x), reference.log_marginal(x))
    assert fitted.log_marginal(x).mean().item() >= pca.score(correlated)


def test_log_marginal_matches_dense_gaussian_in_high_dimension():
    torch.manual_seed(3)
    model = LinearGaussian.from_params(
        torch.randn(400, 3, dtype=torch.float64), torch.randn(400), torch.rand(400) + 0.5
    )
    x = model.sample(20)
    expected = _dense_marginal(model).log_prob(x)
    torch.testing.assert_close(model.log_marginal(x), expected, rtol=1e-10, atol=1e-8)


def test_posterior_matches_gaussian_conditioning():
    torch.manual_seed(4)
    model = LinearGaussian.from_params(
        torch.randn(5, 2, dtype=torch.float64), torch.randn(5), torch.rand(5) + 0.2
    )
    x = model.sample(7)
    covariance = _dense_marginal(model).covariance_matrix  # (D, D)
    gain = torch.linalg.solve(covariance, model.weight).T  # W^T C^-1, (k, D)
    posterior = model.posterior(x)
    torch.testing.assert_close(posterior.mean, (x - model.bias) @ gain.T)
    expected_cov = torch.eye(2, dtype=torch.float64) - gain @ model.weight
    torch.testing.assert_close(posterior.covariance_matrix, expected_cov.expand(7, 2, 2))


def test_fixed_noise_holds_noise_out_of_training():
    model = LinearGaussian(4, 2, fixed_noise=0.3)
    assert torch.equal(model.noise_scale, torch.full((4,), 0.3))
    assert all("noise" not in name for name, _ in model.named_parameters())


def test_two_instances_do_not_share_parameters():
    first, second = LinearGaussian(3, 1), LinearGaussian(3, 1)
    x = torch.randn(5, 3)
    first(x), second(x)  # both register their parameters with Pyro
    with torch.no_grad():
        first.weight.fill_(2.0)
    second(x)
    assert not torch.equal(second.weight, first.weight)
    pyro.clear_param_store()
    first(x)
    assert bool((first.weight == 2.0).all())


def test_state_dict_round_trips():
    model = LinearGaussian(4, 2, noise="isotropic")
    clone = LinearGaussian(4, 2, noise="isotropic")
    clone.load_state_dict(model.state_dict())
    x = torch.randn(6, 4)
    torch.testing.assert_close(clone.log_marginal(x), model.log_marginal(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise": "full"}, "noise must be one of"),
        ({"fixed_noise": -1.0}, "fixed_noise must be"),
        ({"latent_dim": 0}, "latent_dim must be"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, message):
    arguments = {"data_dim": 3, "latent_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        LinearGaussian(**arguments)


def _collinear_model(noise: float, dtype: torch.dtype) -> LinearGaussian:
    """Two columns of W on one line, and small noise: an ill-conditioned marginal covariance."""
    column = torch.randn(5, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weight = torch.cat([column, 2 * column], 1).to(dtype)
    return LinearGaussian.from_params(weight, torch.zeros(5, dtype=dtype), noise)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_marginal_stays_accurate_for_collinear_columns_and_small_noise(dtype):
    model = _collinear_model(1e-3, dtype)
    weight = model.weight.detach().double()
    covariance = weight @ weight.T + torch.diag(model.noise_scale.detach().double() ** 2)
    x = model.sample(20).double()
    reference = multivariate_normal(np.zeros(5), covariance.numpy()).logpdf(x.numpy())
    ours = model.log_marginal(x).detach().double().numpy()
    # float64 arithmetic for either dtype: only the result's rounding to float32 remains.
    rounding = 0.0 if dtype == torch.float64 else 2 * torch.finfo(torch.float32).eps
    np.testing.assert_allclose(ours, reference, rtol=rounding, atol=1e-6)


def test_log_marginal_says_when_it_cannot_be_accurate():
    model = _collinear_model(1e-6, torch.float64)
    with pytest.raises(NoExactValueError, match="condition number about"):
        exact_log_marginal(model, torch.zeros(3, 5, dtype=torch.float64))
