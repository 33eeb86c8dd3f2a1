"""The compiled log weights (``compile=`` of ``iw_log_marginal`` and ``elbo``): the same draws and
the same figures as the eager path, on the built-in models and on a user's program; the eager
numbers, with one notice, wherever capture fails; a named error where it is required and cannot
be had.

Each program is compiled once per process (TorchDynamo's cache), so the programs here are few
and small, and shared by the tests.
"""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from guides import AmortizedGaussian
from inference import elbo, iw_log_marginal
from inference.estimators import _compiled
from inference.estimators._compiled import CompileError, CompileWarning
from lvm_models import BernoulliVAE, datasets

ROUND_OFF = 1e-5  # relative: float32 log weights of the same draws, computed two ways
NUM_SAMPLES, CHUNK = 120, 30  # four chunks: eager, compiled and checked, compiled, compiled


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return datasets.load("binarized-digits").x[:24]


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return BernoulliVAE(64, 4, hidden=(16,)), AmortizedGaussian(64, 4, hidden=(16,))


class TwoLevelVAE:
    """A user's program written as Pyro's examples write them: model and guide as methods, two
    latent sites per point (z1 -> z2 -> x), networks registered with ``pyro.module``."""

    def __init__(self) -> None:
        torch.manual_seed(1)
        self.top_to_bottom = nn.Linear(2, 3)
        self.decoder = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 64))
        self.encoder = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 6))
        self.bottom_to_top = nn.Linear(3, 4)

    def model(self, x: torch.Tensor) -> None:
        pyro.module("two_level_top_to_bottom", self.top_to_bottom)
        pyro.module("two_level_decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            top = pyro.sample("top", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            bottom = pyro.sample("bottom", dist.Normal(self.top_to_bottom(top), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(bottom)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("two_level_encoder", self.encoder)
        pyro.module("two_level_bottom_to_top", self.bottom_to_top)
        with pyro.plate("data", x.shape[0]):
            loc, raw_scale = self.encoder(x).chunk(2, -1)
            bottom = pyro.sample(
                "bottom", dist.Normal(loc, nn.functional.softplus(raw_scale)).to_event(1)
            )
            loc, raw_scale = self.bottom_to_top(bottom).chunk(2, -1)
            pyro.sample("top", dist.Normal(loc, nn.functional.softplus(raw_scale)).to_event(1))


@pytest.fixture(scope="module")
def two_level() -> TwoLevelVAE:
    return TwoLevelVAE()


def model_of_one_latent(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide_of_one_latent(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.5 * x, 0.9))


def guide_refusing_capture(x: torch.Tensor) -> None:
    """Fails under capture only: what a program the compiler cannot follow does."""
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(_loc_failing_capture(x), 0.9))


def _loc_failing_capture(x: torch.Tensor) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return 0.5 * x + torch.ones(len(x) + 1)  # a shape error
    return 0.5 * x


def model_captured_differently(x: torch.Tensor) -> None:
    """Another density under capture: what a capture that does not repeat the program gives."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(_shifted_under_capture(z), 1.0), obs=x)


def _shifted_under_capture(z: torch.Tensor) -> torch.Tensor:
    return z + 1.0 if torch.compiler.is_compiling() else z


def iw(model, guide, x, compile, **options):
    return iw_log_marginal(
        model,
        guide,
        x,
        num_samples=NUM_SAMPLES,
        chunk_size=CHUNK,
        seed=0,
        compile=compile,
        **options,
    )


def test_compiled_iw_of_a_builtin_vae_matches_eager(vae, digits):
    compiled, eager = (iw(*vae, digits, compile) for compile in (True, False))
    torch.testing.assert_close(compiled.per_point, eager.per_point, rtol=ROUND_OFF, atol=0)
    torch.testing.assert_close(compiled.ess, eager.ess, rtol=1e-4, atol=0)


def test_compiled_iw_of_a_user_program_with_two_latent_sites_matches_eager(two_level, digits):
    programs = (two_level.model, two_level.guide)
    compiled, eager = (iw(*programs, digits, compile) for compile in (True, False))
    torch.testing.assert_close(compiled.per_point, eager.per_point, rtol=ROUND_OFF, atol=0)


def test_compiled_elbo_matches_eager(two_level, digits):
    compiled, eager = (
        elbo(
            two_level.model,
            two_level.guide,
            digits,
            num_particles=NUM_SAMPLES,
            chunk_size=CHUNK,
            seed=0,
            compile=compile,
        )
        for compile in (True, False)
    )
    torch.testing.assert_close(compiled.per_point, eager.per_point, rtol=ROUND_OFF, atol=0)


def test_compile_true_computes_every_chunk_after_the_first_compiled(vae, digits, monkeypatch):
    compiled = _compiled._compiled_log_importance_weights()
    sizes = []

    def counted(model, guide, inputs, size, info):
        sizes.append(size)
        return compiled(model, guide, inputs, size, info)

    monkeypatch.setattr(_compiled, "_compiled_log_importance_weights", lambda: counted)
    iw(*vae, digits, True)
    assert sizes == [CHUNK] * (NUM_SAMPLES // CHUNK - 1)


def test_compiled_iw_draws_as_many_numbers_from_the_callers_rng_as_eager(vae, digits):
    states = []
    for compile in (True, False):
        torch.manual_seed(7)
        iw_log_marginal(*vae, digits, num_samples=NUM_SAMPLES, chunk_size=CHUNK, compile=compile)
        states.append(torch.get_rng_state())
    assert torch.equal(*states)


def test_compiled_iw_sees_parameters_trained_after_an_earlier_call(vae, digits):
    model, guide = vae
    before = iw(model, guide, digits, True)
    decoder_bias = model.decoder[-1].bias
    with torch.no_grad():
        decoder_bias.add_(0.5)  # an optimiser's step: in place
    try:
        compiled, eager = (iw(model, guide, digits, compile) for compile in (True, False))
    finally:
        with torch.no_grad():
            decoder_bias.sub_(0.5)
    assert (compiled.per_point - before.per_point).abs().min() > 1e-3
    torch.testing.assert_close(compiled.per_point, eager.per_point, rtol=ROUND_OFF, atol=0)


@pytest.mark.parametrize(
    "model, guide",
    [
        (model_of_one_latent, guide_refusing_capture),
        (model_captured_differently, guide_of_one_latent),
    ],
    ids=["capture fails", "capture differs"],
)
def test_where_capture_fails_the_figures_are_the_eager_ones_with_one_notice(
    model, guide, monkeypatch
):
    monkeypatch.setattr(_compiled, "AUTO_MIN_SECONDS", 0.0)  # this short call compiles
    x = torch.linspace(-2, 2, 10)
    with pytest.warns(CompileWarning, match="iw_log_marginal: .* eagerly") as notices:
        fallback = iw(model, guide, x, None)
    assert len([n for n in notices if n.category is CompileWarning]) == 1
    eager = iw(model, guide, x, False)
    assert torch.equal(fallback.per_point, eager.per_point)


def test_compile_true_names_the_failure_where_capture_fails():
    x = torch.linspace(-2, 2, 10)
    with pytest.raises(CompileError, match=r"compile=True\): compiling fails"):
        iw(model_of_one_latent, guide_refusing_capture, x, True)


def test_compile_true_refuses_programs_run_one_particle_at_a_time(vae, digits):
    with pytest.raises(CompileError, match="one particle at a time"):
        iw(*vae, digits, True, vectorize=False)


def test_a_short_call_stays_eager_without_notice(vae, digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        auto = iw(*vae, digits, None)
    assert torch.equal(auto.per_point, iw(*vae, digits, False).per_point)


def test_compile_must_be_none_true_or_false(vae, digits):
    with pytest.raises(TypeError, match="compile must be None, True or False; got 'yes'"):
        iw(*vae, digits, "yes")
