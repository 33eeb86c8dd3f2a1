"""Objectives and KL schedules as values: each trains exactly as the keywords of fit that name
it, records itself in a checkpoint, and a new one plugs in without touching fit."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from guides import AmortizedGaussian
from inference import fit
from inference.training.checkpoint import CheckpointError, load_checkpoint
from inference.training.objectives import ELBO, IWAE, FreeBits, JitELBO
from inference.training.schedules import ConstantBeta, KLSchedule, LinearWarmup
from lvm_models import GaussianMixture, GaussianVAE, datasets

X = datasets.correlated_gaussian(num_data=80, data_dim=4, seed=0).x


def trained(**options) -> tuple[dict, list[torch.Tensor]]:
    """The history and final parameters of a short seeded run from fixed initial parameters."""
    torch.manual_seed(1)
    model, guide = GaussianVAE(4, 2, hidden=(8,)), AmortizedGaussian(4, 2, hidden=(8,))
    result = fit(
        model, guide, X, steps=12, batch_size=20, seed=0, log_every=3, progress=False, **options
    )
    parameters = [p.detach().clone() for p in (*model.parameters(), *guide.parameters())]
    return result.history.to_dict(), parameters


def assert_same_run(first: tuple, second: tuple) -> None:
    assert first[0] == second[0]
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1], strict=True))


@pytest.mark.parametrize(
    ("keywords", "value"),
    [
        ({"num_particles": 2}, ELBO(num_particles=2)),
        ({"objective": "iwae", "num_particles": 3}, IWAE(num_particles=3)),
        ({"free_bits": 0.3, "num_particles": 2}, FreeBits(0.3, num_particles=2)),
        ({"jit": True}, JitELBO()),
    ],
)
def test_an_objective_value_trains_exactly_as_the_keywords_that_name_it(keywords, value):
    assert_same_run(trained(**keywords), trained(objective=value))


@pytest.mark.parametrize(
    ("keywords", "schedule"),
    [
        ({"beta": 0.4}, ConstantBeta(0.4)),
        ({"beta": 2.0, "kl_warmup_steps": 5}, LinearWarmup(2.0, warmup_steps=5)),
    ],
)
def test_a_kl_schedule_value_trains_exactly_as_beta_and_warmup(keywords, schedule):
    assert_same_run(trained(**keywords), trained(kl_schedule=schedule))


def test_linear_warmup_rises_to_beta_over_its_steps_then_stays():
    weights = [LinearWarmup(2.0, warmup_steps=4)(step, 6) for step in range(6)]
    assert weights == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]


def test_built_in_values_record_the_option_keys_of_checkpoint_format_2():
    """So checkpoints written before objectives and schedules were values still resume."""
    format_2 = {"objective", "num_particles", "free_bits", "jit", "enumerate"}
    for objective in (ELBO(enumerate=False), IWAE(4), FreeBits(0.5), JitELBO()):
        assert set(objective.options()) == format_2
    assert FreeBits(0.5).options()["free_bits"] == 0.5 and JitELBO().options()["jit"] is True
    assert ConstantBeta(0.3).options() == {"beta": 0.3, "kl_warmup_steps": 0}
    assert LinearWarmup(1.0, 7).options() == {"beta": 1.0, "kl_warmup_steps": 7}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"objective": IWAE(3), "num_particles": 3}, "num_particles"),
        ({"objective": ELBO(), "enumerate": True}, "enumerate"),
        ({"objective": ELBO(), "free_bits": 0.5}, "free_bits"),
        ({"kl_schedule": ConstantBeta(0.5), "beta": 0.5}, "beta"),
        ({"kl_schedule": LinearWarmup(1.0, 3), "kl_warmup_steps": 3}, "kl_warmup_steps"),
    ],
)
def test_an_option_given_both_to_fit_and_in_a_value_is_refused(options, named):
    with pytest.raises(ValueError, match=named):
        trained(**options)


@pytest.mark.parametrize("options", [{"jit": True, "kl_warmup_steps": 3}, {"objective": JitELBO()}])
def test_a_compiled_objective_refuses_a_changing_kl_weight(options):
    schedule = {} if "jit" in options else {"kl_schedule": LinearWarmup(1.0, 3)}
    with pytest.raises(ValueError, match="constant KL weight"):
        trained(**options, **schedule)


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: IWAE(0), "num_particles"),
        (lambda: FreeBits(-1.0), "floor"),
        (lambda: LinearWarmup(1.0, 0), "warmup_steps"),
        (lambda: ConstantBeta(float("nan")), "beta"),
        (lambda: ELBO(enumerate="yes"), "enumerate"),
    ],
)
def test_a_value_checks_its_fields(build, named):
    with pytest.raises(ValueError, match=named):
        build()


def test_fit_refuses_a_kl_schedule_that_is_not_one():
    with pytest.raises(TypeError, match="kl_schedule"):
        trained(kl_schedule=0.5)


@dataclass(frozen=True)
class Cyclical(KLSchedule):
    """Fu et al. (2019): ``cycles`` cycles, the weight rising linearly over the first
    ``ratio`` of each (a test's own schedule, as a user would write one)."""

    cycles: int = 2
    ratio: float = 0.5

    def __call__(self, step: int, steps: int) -> float:
        period = steps / self.cycles
        return min(1.0, (step % period + 1) / (period * self.ratio))


def test_a_new_schedule_plugs_in_and_a_resumption_must_match_it(tmp_path):
    history, _ = trained(kl_schedule=Cyclical())
    assert history["beta"] == [Cyclical()(step, 12) for step in history["logged_steps"]]

    path = tmp_path / "run.pt"
    trained(kl_schedule=Cyclical(), checkpoint=path)
    assert load_checkpoint(path).options["kl_schedule"] == repr(Cyclical())
    with pytest.raises(CheckpointError, match="kl_schedule"):
        trained(kl_schedule=Cyclical(cycles=3), resume=path)


def test_an_objective_that_draws_discrete_latents_names_the_site_its_guide_leaves_out():
    """Only the enumerated ELBO may leave a discrete site to the model: IWAE weighs the
    guide's draws, so a guide without them would give another bound."""
    x = datasets.gaussian_mixture(num_data=30, seed=0).x
    with pytest.raises(ValueError, match=r"does not sample latent site\(s\) \['z'\]"):
        fit(GaussianMixture(x.shape[1], 3), lambda x: None, x, objective="iwae", progress=False)
