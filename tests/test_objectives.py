"""Objectives and KL schedules as values: each trains exactly as the keywords of fit that name
it, records itself in a checkpoint, and a new one plugs in without touching fit. Compiled, an
objective takes the steps of the eager one, with the same random numbers."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pytest
import torch

from guides import AmortizedCategorical, AmortizedGaussian
from inference import fit
from inference.training.checkpoint import CheckpointError, load_checkpoint
from inference.training.objectives import (
    ELBO,
    IWAE,
    CompilationError,
    CompilationWarning,
    FreeBits,
    JitELBO,
)
from inference.training.schedules import (
    ConstantBeta,
    CyclicalAnnealing,
    KLSchedule,
    LinearWarmup,
)
from lvm_models import BernoulliVAE, GaussianMixture, GaussianVAE, LinearGaussian, datasets

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
        (
            {"objective": "iwae", "num_particles": 3, "gradient": "dreg"},
            IWAE(num_particles=3, gradient="dreg"),
        ),
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


def frange_cycle_linear(n_iter, start=0.0, stop=1.0, n_cycle=4, ratio=0.5):
    """The reference code of Fu et al. (2019), haofuml/cyclical_annealing, as written there."""
    schedule = [stop] * n_iter
    period = n_iter / n_cycle
    step = (stop - start) / (period * ratio)
    for c in range(n_cycle):
        v, i = start, 0
        while v <= stop and int(i + c * period) < n_iter:
            schedule[int(i + c * period)] = v
            v += step
            i += 1
    return schedule


@pytest.mark.parametrize("steps", [12, 100, 37, 1000])
@pytest.mark.parametrize(("cycles", "ratio"), [(1, 1.0), (4, 0.5), (3, 0.25), (7, 0.8)])
def test_cyclical_annealing_gives_the_reference_codes_weights(steps, cycles, ratio):
    """Periods that are not whole numbers (37 / 3, 100 / 7) included."""
    schedule = CyclicalAnnealing(beta=2.0, cycles=cycles, ratio=ratio)
    expected = frange_cycle_linear(steps, 0.0, 2.0, n_cycle=cycles, ratio=ratio)
    assert [schedule(step, steps) for step in range(steps)] == pytest.approx(expected, abs=1e-12)


def test_cyclical_annealing_restarts_each_cycle_from_zero():
    weights = [CyclicalAnnealing(cycles=2, ratio=0.5)(step, 8) for step in range(8)]
    assert weights == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]


def test_cyclical_annealing_in_fit_logs_its_weights_and_a_resumption_must_match_it(tmp_path):
    schedule = CyclicalAnnealing(beta=1.5, cycles=2, ratio=0.5)
    history, _ = trained(kl_schedule=schedule)
    assert history["beta"] == [schedule(step, 12) for step in history["logged_steps"]]
    assert len(set(history["beta"])) > 1
    path = tmp_path / "run.pt"
    trained(kl_schedule=schedule, checkpoint=path)
    assert load_checkpoint(path).options["kl_schedule"] == repr(schedule)
    with pytest.raises(CheckpointError, match="kl_schedule"):
        trained(kl_schedule=CyclicalAnnealing(beta=1.5, cycles=3, ratio=0.5), resume=path)


def test_a_dreg_run_steps_otherwise_than_the_plain_one_and_its_checkpoint_says_so(tmp_path):
    """The first loss (before any update) is the same bound of the same draws; the updates
    are not the same."""
    path = tmp_path / "plain.pt"
    plain = trained(objective="iwae", num_particles=4, checkpoint=path)
    dreg = trained(objective="iwae", num_particles=4, gradient="dreg")
    assert dreg[0]["losses"][0] == pytest.approx(plain[0]["losses"][0], rel=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(plain[1], dreg[1], strict=True))
    assert "gradient" not in load_checkpoint(path).options  # format 2, as before DReG
    assert IWAE(4, gradient="dreg").options()["gradient"] == "dreg"
    with pytest.raises(CheckpointError, match="gradient"):
        trained(objective="iwae", num_particles=4, gradient="dreg", resume=path)


def test_built_in_values_record_the_option_keys_of_checkpoint_format_2():
    """So checkpoints written before objectives and schedules were values still resume."""
    format_2 = {"objective", "num_particles", "free_bits", "jit", "enumerate"}
    for objective in (ELBO(enumerate=False), IWAE(4), FreeBits(0.5), JitELBO()):
        assert set(objective.options()) == format_2
    assert FreeBits(0.5).options()["free_bits"] == 0.5 and JitELBO().options()["jit"] is True
    assert FreeBits(0.5, jit=True).options()["jit"] is True
    assert JitELBO().options() == ELBO(enumerate=False, jit=True).options()
    assert ELBO(enumerate=False).options()["jit"] is False
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
        ({"objective": IWAE(3), "gradient": "dreg"}, "gradient"),
    ],
)
def test_an_option_given_both_to_fit_and_in_a_value_is_refused(options, named):
    with pytest.raises(ValueError, match=named):
        trained(**options)


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: IWAE(0), "num_particles"),
        (lambda: FreeBits(-1.0), "floor"),
        (lambda: LinearWarmup(1.0, 0), "warmup_steps"),
        (lambda: ConstantBeta(float("nan")), "beta"),
        (lambda: ELBO(enumerate="yes"), "enumerate"),
        (lambda: ELBO(jit="yes"), "jit"),
        (lambda: ELBO(enumerate=True, jit=True), "enumerate"),
        (lambda: IWAE(3, gradient="score"), "gradient"),
        (lambda: CyclicalAnnealing(cycles=0), "cycles"),
        (lambda: CyclicalAnnealing(cycles=2.5), "cycles"),
        (lambda: CyclicalAnnealing(ratio=0.0), "ratio"),
        (lambda: CyclicalAnnealing(ratio=1.5), "ratio"),
        (lambda: CyclicalAnnealing(beta=float("inf")), "beta"),
    ],
)
def test_a_value_checks_its_fields(build, named):
    with pytest.raises(ValueError, match=named):
        build()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gradient": "dreg"}, "gradient='dreg' .* needs objective='iwae'; got objective='elbo'"),
        ({"objective": "iwae", "gradient": "score"}, "gradient must be one of"),
    ],
)
def test_fit_names_a_gradient_it_cannot_use(options, message):
    with pytest.raises(ValueError, match=message):
        trained(**options)


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


# --- compiled steps ------------------------------------------------------------------------------

DIGITS = datasets.binarized_digits(seed=0).x[:256]
COMPILED_STEPS = 50


def digits_vae():
    return BernoulliVAE(64, 4, hidden=(16,)), AmortizedGaussian(64, 4, hidden=(16,))


def gaussian_vae():
    return GaussianVAE(4, 2, hidden=(8,)), AmortizedGaussian(4, 2, hidden=(8,))


def linear_gaussian():
    return LinearGaussian(4, 2), AmortizedGaussian(4, 2, hidden=())


def run_of(pair, x: torch.Tensor, steps: int = COMPILED_STEPS, **options) -> tuple[list, list]:
    """The losses and final parameters of a seeded minibatch run from fixed initial parameters."""
    torch.manual_seed(1)
    model, guide = pair()
    result = fit(model, guide, x, steps=steps, batch_size=64, seed=0, progress=False, **options)
    parameters = [p.detach().clone() for p in (*model.parameters(), *guide.parameters())]
    return list(result.history.losses), parameters


def assert_same_draws(eager: tuple, compiled: tuple) -> None:
    """The same random numbers give losses equal to float rounding, not merely alike: another
    stream would differ by the Monte-Carlo noise of a step, percents."""
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=0)
    for mine, theirs in zip(compiled[1], eager[1], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("pair", "x"),
    [(digits_vae, DIGITS), (gaussian_vae, X.repeat(4, 1)), (linear_gaussian, X.repeat(4, 1))],
    ids=["bernoulli-vae", "gaussian-vae", "linear-gaussian"],
)
@pytest.mark.parametrize(
    "remedies",
    [
        {},
        {"num_particles": 8},
        {"beta": 0.3, "kl_warmup_steps": 20},
        {"kl_schedule": Cyclical(cycles=5)},
        {"free_bits": 0.5},
        {"free_bits": 0.5, "num_particles": 3, "kl_warmup_steps": 10},
    ],
    ids=["elbo", "8-particles", "warm-up", "cyclical", "free-bits", "free-bits-warm-up"],
)
def test_a_compiled_step_draws_the_random_numbers_of_the_eager_step(pair, x, remedies):
    assert_same_draws(run_of(pair, x, jit=False, **remedies), run_of(pair, x, jit=True, **remedies))


def test_jit_none_compiles_and_its_checkpoint_records_that(tmp_path):
    path = tmp_path / "run.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompilationWarning)
        compiled = run_of(gaussian_vae, X, steps=12, jit=None, checkpoint=path)
    assert load_checkpoint(path).options["jit"] is True
    assert_same_draws(run_of(gaussian_vae, X, steps=12, jit=False), compiled)


@pytest.mark.parametrize("jit", [None, True])
def test_a_resumed_compiled_run_ends_where_the_uninterrupted_one_does(tmp_path, jit):
    path = tmp_path / "run.pt"
    uninterrupted = run_of(gaussian_vae, X, steps=12, jit=True)
    run_of(gaussian_vae, X, steps=7, jit=True, checkpoint=path)
    assert_same_run(run_of(gaussian_vae, X, steps=12, jit=jit, resume=path), uninterrupted)


def test_jit_none_resumes_an_eager_checkpoint_eagerly(tmp_path):
    """Checkpoints written before jit=None (and any eager run) continue on their own path."""
    path = tmp_path / "run.pt"
    uninterrupted = run_of(gaussian_vae, X, steps=12, jit=False)
    run_of(gaussian_vae, X, steps=7, jit=False, checkpoint=path)
    assert_same_run(run_of(gaussian_vae, X, steps=12, jit=None, resume=path), uninterrupted)
    with pytest.raises(CheckpointError, match="jit"):
        run_of(gaussian_vae, X, steps=12, jit=True, resume=path)


BRANCHING_X = torch.cat([torch.ones(20, 2), -torch.ones(20, 2)])  # the sign changes halfway


def branching_model(x: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """A model whose structure depends on the data: a trace keeps the first batch's branch.
    ``labels`` is unused: a keyword argument to pass."""
    shift = 1.0 if bool(x[0, 0] > 0) else -1.0
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z + shift, 1.0).to_event(1), obs=x)


def branching_run(**options) -> list[float]:
    torch.manual_seed(1)
    encoder = AmortizedGaussian(2, 2, hidden=(4,))

    def guide(x: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        encoder(x)

    result = fit(
        branching_model,
        guide,
        BRANCHING_X,
        steps=5,
        batch_size=10,
        seed=0,
        progress=False,
        **options,
    )
    return list(result.history.losses)


def test_jit_none_runs_what_it_cannot_compile_eagerly_with_a_notice_and_the_same_draws():
    with pytest.warns(CompilationWarning, match="runs eagerly: the compiled step differs"):
        losses = branching_run(jit=None)
    assert losses == branching_run(jit=False)


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({}, "differs from the eager one"),
        (
            {"model_kwargs": {"labels": torch.zeros(40)}},
            r"tensor keyword argument\(s\) \['labels'\]",
        ),
    ],
)
def test_jit_true_names_why_it_cannot_compile(options, why):
    with pytest.raises(CompilationError, match=f"jit=True cannot compile this step: .*{why}"):
        branching_run(jit=True, **options)


def test_jit_none_leaves_enumeration_eager_with_a_notice():
    x = datasets.gaussian_mixture(num_data=30, seed=0).x
    with pytest.warns(CompilationWarning, match="enumerated"):
        fit(GaussianMixture(2, 3), lambda x: None, x, steps=2, progress=False, jit=None)


def test_jit_true_on_a_mixture_draws_its_discrete_sites_from_the_guide():
    """A compiled ELBO does not enumerate: the guide's draws get a score-function gradient."""
    x = datasets.gaussian_mixture(num_data=30, seed=0).x
    runs = []
    for options in ({"enumerate": False}, {"jit": True}):
        torch.manual_seed(1)
        model, guide = GaussianMixture(2, 3), AmortizedCategorical(2, 3)
        runs.append(fit(model, guide, x, steps=20, seed=0, progress=False, **options))
    runs = [run.history.losses for run in runs]
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-5, atol=0)


def test_jit_true_refuses_iwae():
    with pytest.raises(CompilationError, match="objective='iwae'"):
        trained(objective="iwae", jit=True)
