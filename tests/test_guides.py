from __future__ import annotations

import pyro
import pytest
import torch

from guides import AmortizedCategorical, AmortizedGaussian, ExactPosterior, MeanField, PriorGuide
from lvm_models import GaussianMixture, GaussianVAE, LinearGaussian


def _latent_sites(guide, x) -> dict[str, torch.Tensor]:
    trace = pyro.poutine.trace(guide).get_trace(x)
    return {
        name: site["value"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and name != "data"
    }


@pytest.mark.parametrize(
    ("make_guide", "shape"),
    [
        (lambda: AmortizedGaussian(4, 3, hidden=(8,)), (6, 3)),
        (lambda: MeanField(6, 3), (6, 3)),
        (lambda: PriorGuide(LinearGaussian(4, 3)), (6, 3)),
        (lambda: ExactPosterior(LinearGaussian(4, 3)), (6, 3)),
        (lambda: AmortizedCategorical(4, 5), (6,)),
        (lambda: PriorGuide(GaussianMixture(4, 5)), (6,)),
    ],
)
def test_guide_samples_the_latent_site_z_for_every_point(make_guide, shape):
    sites = _latent_sites(make_guide(), torch.randn(6, 4))
    assert list(sites) == ["z"]
    assert sites["z"].shape == shape


def test_exact_posterior_guide_draws_from_the_model_posterior():
    model = LinearGaussian.from_params(
        torch.randn(4, 2, dtype=torch.float64), torch.zeros(4), torch.ones(4)
    )
    x = model.sample(3)
    trace = pyro.poutine.trace(ExactPosterior(model)).get_trace(x)
    posterior = model.posterior(x)
    torch.testing.assert_close(trace.nodes["z"]["fn"].mean, posterior.mean)
    torch.testing.assert_close(
        trace.nodes["z"]["fn"].covariance_matrix, posterior.covariance_matrix
    )


def test_prior_guide_draws_from_the_prior_and_hides_observations():
    model = GaussianVAE(3, 2, hidden=(4,))
    trace = pyro.poutine.trace(PriorGuide(model)).get_trace(torch.randn(5, 3))
    assert "x" not in trace.nodes
    fn = trace.nodes["z"]["fn"]
    torch.testing.assert_close(fn.mean, torch.zeros(5, 2))
    torch.testing.assert_close(fn.stddev, torch.ones(5, 2))


def test_prior_guide_owns_no_parameters():
    assert list(PriorGuide(LinearGaussian(3, 1)).parameters()) == []


def test_mean_field_rejects_data_of_another_size():
    with pytest.raises(ValueError, match="num_data=6"):
        MeanField(6, 2)(torch.randn(4, 3))


def test_exact_posterior_needs_a_linear_gaussian():
    with pytest.raises(TypeError, match="LinearGaussian"):
        ExactPosterior(GaussianVAE(3, 2))


def test_two_encoders_do_not_share_parameters():
    first, second = AmortizedGaussian(3, 2), AmortizedGaussian(3, 2)
    x = torch.randn(4, 3)
    first(x), second(x)
    torch.nn.init.zeros_(first.encoder[0].weight)
    second(x)
    assert second.encoder[0].weight.abs().sum() > 0
