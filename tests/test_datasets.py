"""Specification of lvm_models.datasets: seeded offline loaders, exact densities, ML reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from lvm_models.datasets import (
    DATASETS,
    Dataset,
    binarized_digits,
    correlated_gaussian,
    dequantized_digits,
    gaussian_max_log_likelihood,
    gaussian_mixture,
    independent_gaussian,
    load,
)

# name -> (small keyword arguments, expected shape of x)
LOADER_CASES = {
    "independent-gaussian": ({"num_data": 300, "data_dim": 5}, (300, 5)),
    "correlated-gaussian": ({"num_data": 300, "data_dim": 6}, (300, 6)),
    "gaussian-mixture": ({"num_data": 300, "data_dim": 3, "num_components": 4}, (300, 3)),
    "two-moons": ({"num_data": 300, "noise": 0.05}, (300, 2)),
    "binarized-digits": ({}, (1797, 64)),
    "dequantized-digits": ({}, (1797, 64)),
}
GAUSSIAN_LOADERS = [independent_gaussian, correlated_gaussian]


def _load_case(name: str, seed: int = 0) -> Dataset:
    kwargs, _ = LOADER_CASES[name]
    return load(name, seed=seed, **kwargs)


def _recovered_gaussian(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of a Gaussian log_density, read off its gradient and Hessian.

    For log N(x; mu, Sigma), the Hessian is -Sigma^{-1} everywhere and the gradient at x0 is
    -Sigma^{-1} (x0 - mu), so the parameters come from the density itself, not from the loader.
    """
    point = data.x[0].double()
    precision = -torch.autograd.functional.hessian(
        lambda v: data.log_density(v[None])[0], point
    )  # (D, D)
    gradient = torch.autograd.functional.jacobian(lambda v: data.log_density(v[None])[0], point)
    covariance = torch.linalg.inv(precision)
    return point + covariance @ gradient, covariance


def test_registry_covers_every_loader_case() -> None:
    assert set(DATASETS) == set(LOADER_CASES)


@pytest.mark.parametrize("name", LOADER_CASES)
def test_loader_returns_float32_matrix_of_expected_shape(name: str) -> None:
    data = _load_case(name)
    assert (data.x.dtype, tuple(data.x.shape)) == (torch.float32, LOADER_CASES[name][1])


@pytest.mark.parametrize("name", LOADER_CASES)
def test_loader_values_are_finite(name: str) -> None:
    assert torch.isfinite(_load_case(name).x).all()


@pytest.mark.parametrize("name", LOADER_CASES)
def test_dataset_name_is_its_registry_name(name: str) -> None:
    assert _load_case(name).name == name


@pytest.mark.parametrize("name", LOADER_CASES)
def test_same_seed_gives_identical_tensor(name: str) -> None:
    assert torch.equal(_load_case(name, seed=3).x, _load_case(name, seed=3).x)


@pytest.mark.parametrize("name", LOADER_CASES)
def test_different_seed_gives_different_tensor(name: str) -> None:
    assert not torch.equal(_load_case(name, seed=0).x, _load_case(name, seed=1).x)


@pytest.mark.parametrize("name", LOADER_CASES)
def test_loader_leaves_global_torch_rng_unchanged(name: str) -> None:
    state = torch.get_rng_state()
    _load_case(name)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("name", LOADER_CASES)
def test_loader_leaves_global_numpy_rng_unchanged(name: str) -> None:
    state = np.random.get_state()[1].copy()
    _load_case(name)
    assert np.array_equal(np.random.get_state()[1], state)


@pytest.mark.parametrize("name", ["independent-gaussian", "gaussian-mixture", "two-moons"])
def test_loader_rejects_zero_num_data(name: str) -> None:
    with pytest.raises(ValueError, match="num_data must be an integer >= "):
        load(name, num_data=0)


def test_loader_rejects_negative_seed() -> None:
    with pytest.raises(ValueError, match=r"seed must be None or an integer in \[0, 2\*\*63 - 1\]"):
        independent_gaussian(seed=-1)


def test_binarized_digits_are_zero_or_one() -> None:
    x = binarized_digits().x
    assert ((x == 0) | (x == 1)).all()


def test_binarized_digits_are_flagged_binary() -> None:
    assert binarized_digits().binary


def test_binarized_digits_follow_pixel_intensity() -> None:
    pixels = torch.from_numpy(load_digits().data)
    x = binarized_digits().x.double()
    # Each pixel is Bernoulli(v / 16): the frequency of ones per intensity matches v / 16.
    frequencies = torch.stack([x[pixels == v].mean() for v in range(17)])
    assert torch.allclose(frequencies, torch.arange(17, dtype=torch.float64) / 16, atol=0.03)


def test_dequantized_digits_lie_strictly_inside_unit_interval() -> None:
    x = dequantized_digits().x
    assert ((x > 0) & (x < 1)).all()


def test_dequantized_digits_floor_recovers_integer_pixels() -> None:
    x = dequantized_digits().x.double()
    assert torch.equal(torch.floor(x * 17), torch.from_numpy(load_digits().data))


def test_two_moons_is_standardised_per_coordinate() -> None:
    x = load("two-moons").x.double()
    moments = torch.stack([x.mean(0), x.std(0, correction=0)])  # (2, 2): mean, std per coordinate
    expected = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(moments, expected, atol=1e-6)


def test_datasets_without_known_density_have_no_log_density() -> None:
    unknown = ["two-moons", "binarized-digits", "dequantized-digits"]
    assert all(load(name).log_density is None for name in unknown)


@pytest.mark.parametrize(
    "name", ["independent-gaussian", "correlated-gaussian", "gaussian-mixture"]
)
def test_log_density_returns_float64_per_point(name: str) -> None:
    data = _load_case(name)
    log_density = data.log_density(data.x[:7])
    assert (log_density.dtype, tuple(log_density.shape)) == (torch.float64, (7,))


def test_log_density_rejects_wrong_dimension() -> None:
    data = independent_gaussian(num_data=10, data_dim=4)
    with pytest.raises(ValueError, match=r"x must have shape \(M, 4\)"):
        data.log_density(torch.zeros(3, 5))


@pytest.mark.parametrize("loader", GAUSSIAN_LOADERS)
def test_gaussian_log_density_equals_scipy_logpdf(loader) -> None:
    data = loader(num_data=500)
    mean, covariance = _recovered_gaussian(data)
    expected = scipy.stats.multivariate_normal(mean.numpy(), covariance.numpy()).logpdf(
        data.x.double().numpy()
    )
    np.testing.assert_allclose(data.log_density(data.x).numpy(), expected, rtol=0, atol=1e-8)


@pytest.mark.parametrize("loader", GAUSSIAN_LOADERS)
def test_gaussian_mean_log_density_of_data_approaches_minus_entropy(loader) -> None:
    data = loader(num_data=4000, seed=2)
    _, covariance = _recovered_gaussian(data)
    dim = covariance.shape[0]
    entropy = 0.5 * (dim * math.log(2 * math.pi * math.e) + torch.logdet(covariance).item())
    log_density = data.log_density(data.x)
    stderr = log_density.std().item() / math.sqrt(len(log_density))
    assert abs(log_density.mean().item() + entropy) < 4 * stderr


def _grid(x: torch.Tensor, margin: float, step: float) -> tuple[torch.Tensor, float]:
    """(G, 2) midpoints of a square grid covering the 2-D points x plus a margin; cell area."""
    axes = [
        torch.arange(low - margin, high + margin, step, dtype=torch.float64) + step / 2
        for low, high in zip(x.min(0).values.tolist(), x.max(0).values.tolist(), strict=True)
    ]
    return torch.cartesian_prod(*axes), step**2


def test_mixture_log_density_integrates_to_one() -> None:
    data = gaussian_mixture(data_dim=2, num_components=3)
    grid, cell_area = _grid(data.x.double(), margin=3.0, step=0.02)
    total = torch.exp(data.log_density(grid)).sum().item() * cell_area
    assert abs(total - 1) < 1e-3


def test_mixture_mean_log_density_of_data_approaches_minus_entropy() -> None:
    data = gaussian_mixture(num_data=4000, data_dim=2, num_components=3, seed=1)
    grid, cell_area = _grid(data.x.double(), margin=3.0, step=0.02)
    grid_log_density = data.log_density(grid)
    entropy = -(torch.exp(grid_log_density) * grid_log_density).sum().item() * cell_area
    log_density = data.log_density(data.x)
    stderr = log_density.std().item() / math.sqrt(len(log_density))
    assert abs(log_density.mean().item() + entropy) < 4 * stderr


def _off_diagonal_correlations(x: torch.Tensor) -> torch.Tensor:
    correlation = torch.corrcoef(x.double().T)
    return correlation[~torch.eye(len(correlation), dtype=torch.bool)]


@pytest.mark.parametrize("seed", range(5))
def test_correlated_gaussian_has_strong_correlations(seed: int) -> None:
    x = correlated_gaussian(seed=seed).x
    assert _off_diagonal_correlations(x).abs().mean() > 0.5


def test_independent_gaussian_has_near_zero_correlations() -> None:
    x = independent_gaussian(num_data=2000).x
    # A sample correlation of independent coordinates has standard error about 1/sqrt(N).
    assert _off_diagonal_correlations(x).abs().max() < 4 / math.sqrt(len(x))


@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_max_log_likelihood_mean_equals_closed_form(covariance: str) -> None:
    x = correlated_gaussian(num_data=500).x
    sample_covariance = np.cov(x.double().numpy(), rowvar=False, bias=True)
    if covariance == "diagonal":
        sample_covariance = np.diag(np.diag(sample_covariance))
    dim = x.shape[1]
    closed_form = -0.5 * (
        dim * math.log(2 * math.pi) + np.linalg.slogdet(sample_covariance)[1] + dim
    )
    mean = gaussian_max_log_likelihood(x, covariance=covariance).mean().item()
    assert abs(mean - closed_form) < 1e-8


def test_max_log_likelihood_equals_scipy_logpdf_at_ml_parameters() -> None:
    points = correlated_gaussian(num_data=500).x.double().numpy()
    ml_gaussian = scipy.stats.multivariate_normal(
        points.mean(0), np.cov(points, rowvar=False, bias=True)
    )
    np.testing.assert_allclose(
        gaussian_max_log_likelihood(torch.from_numpy(points)).numpy(),
        ml_gaussian.logpdf(points),
        rtol=0,
        atol=1e-8,
    )


def test_max_log_likelihood_returns_float64_per_point() -> None:
    result = gaussian_max_log_likelihood(independent_gaussian(num_data=50).x)
    assert (result.dtype, tuple(result.shape)) == (torch.float64, (50,))


def test_diagonal_max_log_likelihood_is_below_full_on_correlated_data() -> None:
    x = correlated_gaussian().x
    diagonal = gaussian_max_log_likelihood(x, covariance="diagonal").mean()
    assert diagonal < gaussian_max_log_likelihood(x, covariance="full").mean()


@pytest.mark.parametrize("loader", GAUSSIAN_LOADERS)
def test_max_log_likelihood_beats_true_density_in_sample(loader) -> None:
    data = loader(num_data=300)
    assert gaussian_max_log_likelihood(data.x).mean() >= data.log_density(data.x).mean()


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_data=st.integers(10, 60),
    data_dim=st.integers(1, 5),
    shift=st.floats(-100, 100),
)
def test_max_log_likelihood_is_translation_invariant(
    seed: int, num_data: int, data_dim: int, shift: float
) -> None:
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(num_data, data_dim)))
    moved = gaussian_max_log_likelihood(x + shift)
    assert torch.allclose(moved, gaussian_max_log_likelihood(x), rtol=0, atol=1e-7)


@pytest.mark.parametrize("covariance", ["diag", "spherical", "FULL"])
def test_max_log_likelihood_rejects_unknown_covariance(covariance: str) -> None:
    with pytest.raises(ValueError, match="covariance must be 'full' or 'diagonal'"):
        gaussian_max_log_likelihood(independent_gaussian(num_data=10).x, covariance=covariance)


@pytest.mark.parametrize("shape", [(10,), (1, 3), (2, 3, 4)])
def test_max_log_likelihood_rejects_non_matrix_or_single_row(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="x must be 2-D"):
        gaussian_max_log_likelihood(torch.ones(shape))


def test_max_log_likelihood_rejects_constant_column() -> None:
    x = torch.cat([independent_gaussian(num_data=20, data_dim=2).x, torch.ones(20, 1)], dim=1)
    with pytest.raises(ValueError, match="singular sample covariance"):
        gaussian_max_log_likelihood(x, covariance="diagonal")


def test_load_rejects_unknown_name_listing_known_names() -> None:
    with pytest.raises(ValueError, match="unknown data set 'foo'") as error:
        load("foo")
    assert all(name in str(error.value) for name in DATASETS)


def test_load_passes_keyword_arguments_to_loader() -> None:
    assert load("gaussian-mixture", num_data=17, data_dim=4).x.shape == (17, 4)


def test_dataset_rejects_float64_data() -> None:
    with pytest.raises(ValueError, match="x must be a 2-D float32 tensor"):
        Dataset(name="bad", x=torch.zeros(3, 2, dtype=torch.float64), description="bad")
