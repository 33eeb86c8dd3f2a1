from __future__ import annotations

import pyro
import torch
from pyro import distributions as dist

from guides import AmortizedGaussian
from inference.training.optim import MultiTensorAdam
from inference.training.train import fit
from lvm_models import GaussianVAE, datasets


def trained_parameters(optimizer) -> list[torch.Tensor]:
    x = datasets.correlated_gaussian(num_data=200, data_dim=4, seed=0).x
    torch.manual_seed(0)
    model, guide = GaussianVAE(4, 2, hidden=(8,)), AmortizedGaussian(4, 2, hidden=(8,))
    fit(model, guide, x, steps=50, batch_size=50, seed=0, progress=False, optimizer=optimizer)
    return [p.detach().clone() for p in [*model.parameters(), *guide.parameters()]]


def test_multi_tensor_adam_takes_the_steps_of_pyro_adam():
    ours = trained_parameters(MultiTensorAdam({"lr": 0.01}))
    pyros = trained_parameters(pyro.optim.Adam({"lr": 0.01}))
    for mine, theirs in zip(ours, pyros):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_parameters_outside_the_step_keep_their_values():
    optimizer = MultiTensorAdam({"lr": 0.1})
    used, unused = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    (used.sum() + unused.sum()).backward()
    optimizer([used, unused])
    used.grad, unused.grad = torch.ones(2), torch.zeros(2)  # as SVI leaves them
    before = unused.detach().clone()
    optimizer([used])
    torch.testing.assert_close(unused.detach(), before)
    assert not torch.equal(used.detach(), torch.ones(2))


def test_state_round_trips_through_pyro_adam_format():
    pyro.clear_param_store()

    def model():
        weight = pyro.param("weight", torch.ones(3))
        pyro.sample("y", dist.Normal(weight.sum(), 1.0), obs=torch.tensor(0.0))

    def guide():
        pass

    optimizer = MultiTensorAdam({"lr": 0.1})
    svi = pyro.infer.SVI(model, guide, optimizer, pyro.infer.Trace_ELBO())
    svi.step()
    state = optimizer.get_state()
    reference = pyro.optim.Adam({"lr": 0.1})
    reference.set_state(state)
    pyro.infer.SVI(model, guide, reference, pyro.infer.Trace_ELBO()).step()
    assert int(reference.get_state()["weight"]["state"][0]["step"]) == 2


def test_learning_rate_follows_the_schedule():
    optimizer = MultiTensorAdam({"lr": 1.0}, lr_factor=lambda step: 0.5**step)
    param = torch.zeros(1, requires_grad=True)
    for _ in range(3):
        param.grad = torch.ones(1)
        optimizer([param])
    # With a constant gradient each Adam step moves by its learning rate: 1 + 1/2 + 1/4.
    torch.testing.assert_close(param.detach(), torch.tensor([-1.75]))
