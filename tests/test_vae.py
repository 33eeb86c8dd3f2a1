from __future__ import annotations

import pytest
import torch

from lvm_models import BernoulliVAE, GaussianMixture, GaussianVAE, LinearGaussian


@pytest.mark.parametrize(
    "model",
    [
        LinearGaussian(5, 2),
        GaussianMixture(5, 3),
        GaussianVAE(5, 2, hidden=(8,)),
        GaussianVAE(5, 2, hidden=(8,), covariance="full"),
        GaussianVAE(5, 2, hidden=(8,), covariance="full", cholesky_from_z=True),
        BernoulliVAE(5, 2, hidden=(8,)),
    ],
    ids=lambda m: type(m).__name__,
)
def test_sampling_the_model_gives_data_of_the_right_shape(model):
    assert model.sample(7).shape == (7, 5)
    assert model().shape == (1, 5)


def test_bernoulli_vae_samples_binary_data():
    x = BernoulliVAE(6, 2).sample(50)
    assert set(x.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("cholesky_from_z", [False, True])
def test_set_collapsed_full_decoder_outputs_the_given_gaussian_for_every_z(cholesky_from_z):
    model = GaussianVAE(3, 2, hidden=(8, 8), covariance="full", cholesky_from_z=cholesky_from_z)
    mean = torch.tensor([1.0, -2.0, 0.5])
    covariance = torch.tensor([[2.0, 0.9, 0.1], [0.9, 1.0, 0.3], [0.1, 0.3, 0.5]])
    model.set_collapsed(mean, covariance)
    likelihood = model.likelihood(torch.randn(4, 2) * 3)
    torch.testing.assert_close(likelihood.mean, mean.expand(4, 3))
    torch.testing.assert_close(likelihood.covariance_matrix, covariance.expand(4, 3, 3))


def test_set_collapsed_diagonal_decoder_keeps_only_the_variances():
    model = GaussianVAE(2, 1, hidden=(4,))
    model.set_collapsed(torch.zeros(2), torch.tensor([[4.0, 1.0], [1.0, 0.25]]))
    likelihood = model.likelihood(torch.randn(3, 1))
    torch.testing.assert_close(likelihood.base_dist.scale, torch.tensor([2.0, 0.5]).expand(3, 2))


def test_unknown_covariance_kind_is_named():
    with pytest.raises(ValueError, match="covariance must be one of"):
        GaussianVAE(3, 2, covariance="banded")
