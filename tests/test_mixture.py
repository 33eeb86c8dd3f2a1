from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, TraceEnum_ELBO, config_enumerate
from pyro.optim import Adam
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from lvm_models import GaussianMixture, datasets


@pytest.fixture(scope="module")
def mixture_data() -> np.ndarray:
    return datasets.gaussian_mixture(num_data=400, seed=2).x.double().numpy()


def test_log_marginal_equals_sklearn_score_samples(mixture_data):
    reference = SkGaussianMixture(3, covariance_type="diag", random_state=0).fit(mixture_data)
    model = GaussianMixture.from_params(
        np.log(reference.weights_), reference.means_, np.sqrt(reference.covariances_)
    )
    ours = model.log_marginal(torch.from_numpy(mixture_data)).detach().numpy()
    np.testing.assert_allclose(ours, reference.score_samples(mixture_data), rtol=1e-10)


def test_enumerated_elbo_with_empty_guide_is_minus_log_marginal(mixture_data):
    model = GaussianMixture.from_params(
        torch.tensor([0.1, 0.2, -0.3]), torch.randn(3, 2), torch.rand(3, 2) + 0.5
    )
    x = torch.from_numpy(mixture_data)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(config_enumerate(model), lambda x: None, x)
    assert loss == pytest.approx(-model.log_marginal(x).sum().item(), rel=1e-10)


def test_trains_under_enumeration(mixture_data):
    model = GaussianMixture(2, 3).double()
    x = torch.from_numpy(mixture_data)
    svi = SVI(config_enumerate(model), lambda x: None, Adam({"lr": 0.05}), TraceEnum_ELBO())
    before = svi.evaluate_loss(x)
    for _ in range(50):
        svi.step(x)
    assert svi.evaluate_loss(x) < before


def test_sampled_components_index_the_parameters():
    model = GaussianMixture.from_params(
        torch.tensor([0.0, 0.0]), torch.tensor([[-50.0], [50.0]]), torch.ones(2, 1) * 0.1
    )
    trace = pyro.poutine.trace(model).get_trace(num_data=200)
    z, x = trace.nodes["z"]["value"], trace.nodes["x"]["value"]
    assert x.shape == (200, 1)
    assert torch.equal(x[:, 0] > 0, z == 1)
