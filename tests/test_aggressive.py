"""Aggressive inference-network training (He et al., 2019): the inner encoder-only steps, their
stopping rule, the end of the phase when I_q(x; z) falls, the schedule's clock, resumption,
and a z-using solution no worse in exact log p(x) than the plain run's."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from test_checkpoint import TRAINING, fresh_pair, parameters_of

from guides import AmortizedGaussian
from inference import fit
from inference.training.aggressive import (
    AggressiveTraining,
    _still_aggressive,
    steps_until_no_improvement,
)
from inference.training.checkpoint import CheckpointError
from inference.training.optim import MultiTensorAdam
from lvm_models import LinearGaussian, datasets


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    """test_checkpoint's data: 200 correlated Gaussian points, D = 4."""
    return datasets.correlated_gaussian(num_data=200, data_dim=4, seed=0).x


def adam_steps(optimizer: MultiTensorAdam, module: torch.nn.Module) -> set[int]:
    """The Adam step counts of a module's parameters (as SVI steps them, unconstrained)."""
    state = optimizer._optimizer.state
    return {int(state[p]["step"]) for p in module.parameters() if p in state}


def test_the_inner_steps_train_the_encoder_alone(data):
    """Switched off, the encoder takes one Adam step per step of fit, as the decoder does."""
    model, guide = fresh_pair()
    optimizer = MultiTensorAdam({"lr": 1e-2})
    settings = AggressiveTraining(max_inner_steps=5, check_every=100, mi_every=1000)
    result = fit(model, guide, data, steps=3, optimizer=optimizer, aggressive=settings, **TRAINING)
    assert result.history.encoder_steps == (5, 5, 5)
    assert adam_steps(optimizer, model) == {3}
    assert adam_steps(optimizer, guide) == {15}

    model, guide = fresh_pair()
    optimizer = MultiTensorAdam({"lr": 1e-2})
    fit(model, guide, data, steps=3, optimizer=optimizer, **TRAINING)
    assert adam_steps(optimizer, guide) == {3}


@pytest.mark.parametrize(
    ("losses", "taken"),
    [
        ([5.0] * 3 + [4.0] * 3 + [4.5] * 3, 9),  # the third block is worse: stop after it
        ([5.0] * 3 + [5.0] * 3 + [9.0] * 3 + [1.0], 9),  # a tie goes on, as the reference's
        ([float(-i) for i in range(20)], 10),  # improving to the end: the most allowed
        ([1.0, 9.0], 2),  # fewer steps than a block: the most allowed
    ],
)
def test_the_inner_steps_stop_at_the_first_block_that_did_not_improve(losses, taken):
    most = min(len(losses), 10)
    calls = []

    def step(count: int) -> float:
        calls.append(count)
        return losses[count]

    assert steps_until_no_improvement(step, most, every=3) == taken
    assert calls == list(range(taken))


@pytest.mark.parametrize(
    ("estimates", "aggressive"),
    [([], True), ([0.1, 0.3, 0.3], True), ([0.1, 0.3, 0.2], False), ([-0.01], False)],
)
def test_the_phase_ends_where_the_mutual_information_first_falls(estimates, aggressive):
    assert _still_aggressive(estimates) is aggressive


def test_after_the_phase_ends_fit_takes_ordinary_steps(data):
    model, guide = fresh_pair()
    settings = AggressiveTraining(max_inner_steps=4, check_every=2, mi_every=2)
    history = fit(model, guide, data, steps=60, aggressive=settings, **TRAINING).history
    estimates = [0.0, *history.mutual_info]
    fell = next(j for j in range(1, len(estimates)) if estimates[j] < estimates[j - 1])
    assert len(history.encoder_steps) == history.mutual_info_steps[fell - 1] + 1
    assert len(history.mutual_info) == fell  # no estimate after the phase
    assert all(1 <= taken <= 4 for taken in history.encoder_steps)


def test_the_learning_rate_schedule_follows_the_steps_of_fit_not_the_inner_ones(data):
    clock = []
    optimizer = MultiTensorAdam({"lr": 1e-2}, lr_factor=lambda t: clock.append(t) or 1.0)
    model, guide = fresh_pair()
    settings = AggressiveTraining(max_inner_steps=5, check_every=100, mi_every=1000)
    fit(model, guide, data, steps=3, optimizer=optimizer, aggressive=settings, **TRAINING)
    assert sorted(set(clock)) == [0, 1, 2]

    # and after the phase: here it ends at the first estimate, I_q below 0 on an untrained pair
    clock.clear()
    settings = AggressiveTraining(max_inner_steps=5, check_every=100, mi_every=1, mi_points=8)
    model, guide = fresh_pair()
    history = fit(
        model, guide, data, steps=40, optimizer=optimizer, aggressive=settings, **TRAINING
    ).history
    assert 0 < len(history.encoder_steps) < 40
    assert max(clock) <= 39


def test_resuming_an_aggressive_run_reproduces_the_uninterrupted_one(data, tmp_path):
    settings = AggressiveTraining(max_inner_steps=4, check_every=2, mi_every=3)
    model, guide = fresh_pair()
    uninterrupted = fit(model, guide, data, steps=30, aggressive=settings, **TRAINING).history
    expected = parameters_of(model, guide)

    model, guide = fresh_pair()
    fit(model, guide, data, steps=13, aggressive=settings, checkpoint=tmp_path / "run.pt",
        **TRAINING)  # fmt: skip
    model, guide = fresh_pair()
    resumed = fit(
        model, guide, data, steps=30, aggressive=settings, resume=tmp_path / "run.pt", **TRAINING
    ).history
    assert resumed == uninterrupted
    for mine, theirs in zip(parameters_of(model, guide), expected):
        assert torch.equal(mine, theirs)

    model, guide = fresh_pair()
    with pytest.raises(CheckpointError, match="aggressive"):
        fit(model, guide, data, steps=30, resume=tmp_path / "run.pt", **TRAINING)


def test_aggressive_that_is_not_a_bool_or_settings_is_named(data):
    model, guide = fresh_pair()
    with pytest.raises(TypeError, match="aggressive must be a bool or an AggressiveTraining"):
        fit(model, guide, data, steps=1, aggressive="yes", **TRAINING)


@pytest.mark.parametrize("name", ["max_inner_steps", "check_every", "mi_points", "mi_every"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_each_setting_must_be_a_positive_integer(name, value):
    with pytest.raises(ValueError, match=name):
        AggressiveTraining(**{name: value})


def test_it_reaches_a_z_using_solution_no_worse_in_exact_log_px_than_the_plain_run():
    """pPCA on correlated Gaussian data, where the latent carries the correlation: aggressive
    training changes the path, not the objective, so it must end where plain training does,
    by the exact log p(x) (to a few standard errors of the paired difference)."""
    x = datasets.correlated_gaussian(num_data=1000, data_dim=4, seed=0).x
    x_eval = x[:500]

    def trained(**options) -> tuple[torch.Tensor, float]:
        torch.manual_seed(0)
        model, guide = LinearGaussian(4, 2, noise="isotropic"), AmortizedGaussian(4, 2, hidden=())
        fit(model, guide, x, steps=1500, batch_size=64, lr=2e-2, seed=0, progress=False,
            **options)  # fmt: skip
        rate = fit_rate(model, guide, x_eval)
        return model.log_marginal(x_eval).detach().double(), rate

    plain, plain_rate = trained()
    aggressive, aggressive_rate = trained(aggressive=True)
    difference = aggressive - plain
    stderr = difference.std().item() / math.sqrt(len(difference))
    assert aggressive_rate > 0.5 and plain_rate > 0.5  # both use the latent
    assert difference.mean().item() > -4 * stderr - 1e-3


def fit_rate(model, guide, x) -> float:
    from inference.estimators.diagnostics import rate_and_distortion

    return rate_and_distortion(model, guide, x, seed=0)[0]


def test_the_mutual_information_is_estimated_after_the_first_step_then_every_epoch(data):
    """As the reference: at step 0, then every ceil(N / B) steps; full-batch, every step."""
    estimated = {}
    for batch_size in (None, 50):
        model, guide = fresh_pair()
        settings = AggressiveTraining(max_inner_steps=2, check_every=100)
        options = {**TRAINING, "batch_size": batch_size}
        history = fit(model, guide, data, steps=9, aggressive=settings, **options).history
        estimated[batch_size] = history.mutual_info_steps
    every = {None: 1, 50: 4}  # N = 200
    for batch_size, steps in estimated.items():
        assert len(steps) >= 3, steps  # the phase lasted long enough to show the spacing
        assert steps[0] == 0 and all(b - a == every[batch_size] for a, b in zip(steps, steps[1:]))


def shared_scale_pair():
    """A model and a guide that share the parameter "scale"; the model has "w" of its own."""
    torch.manual_seed(0)

    def model(x):
        w = pyro.param("w", torch.ones(4, 2))
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T, scale).to_event(1), obs=x)

    def guide(x):
        m = pyro.param("m", torch.zeros(4, 2))
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ m, scale).to_event(1))

    return model, guide


def test_a_parameter_the_guide_shares_with_the_model_is_stepped_with_the_decoder(data):
    pyro.clear_param_store()
    model, guide = shared_scale_pair()
    optimizer = MultiTensorAdam({"lr": 1e-2})
    settings = AggressiveTraining(max_inner_steps=5, check_every=100, mi_every=1000)
    fit(model, guide, data, steps=3, optimizer=optimizer, aggressive=settings, jit=False,
        **TRAINING)  # fmt: skip
    store, state = pyro.get_param_store(), optimizer._optimizer.state
    steps = {name: int(state[store.get_param(name).unconstrained()]["step"]) for name in store}
    assert steps == {"w": 3, "scale": 3, "m": 15}
    pyro.clear_param_store()


def test_a_model_without_parameters_of_its_own_is_refused(data):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([4]).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    guide = AmortizedGaussian(4, 4, hidden=(8,))
    with pytest.raises(ValueError, match="the model has no parameters of its own to train"):
        fit(model, guide, data, steps=2, aggressive=True, **TRAINING)
