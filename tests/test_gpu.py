"""Every estimator and fit run on CUDA, where the model's parameters are, and agree with the
CPU: exactly for the closed forms, within Z standard errors for the Monte-Carlo figures (the
two devices draw from different random streams). Skipped without a CUDA device; the message
for data and model on different devices is checked on the CPU."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from guides import AmortizedGaussian
from inference import (
    ais_log_marginal,
    bdmc,
    check_bounds,
    diagnose,
    elbo,
    exact_log_marginal,
    fit,
    gap_decomposition,
    iw_log_marginal,
)
from lvm_models import LinearGaussian

Z = 5.0  # standard errors of the difference: a correct pair strays this far with p < 1e-6
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def pair(device: str) -> tuple[LinearGaussian, AmortizedGaussian, torch.Tensor]:
    """The same float64 model, encoder and data (N = 40, D = 4) on ``device``."""
    pyro.set_rng_seed(0)
    model = LinearGaussian(4, 2).double()
    guide = AmortizedGaussian(4, 2, hidden=(8,)).double()
    x = model.sample(40).detach()
    return model.to(device), guide.to(device), x.to(device)


def assert_agree(on_cpu, on_cuda) -> None:
    """Two Monte-Carlo estimates of one figure on the two devices: means within Z standard
    errors of their difference, per-point results on CUDA."""
    assert on_cuda.per_point.device.type == "cuda"
    assert abs(on_cpu.mean - on_cuda.mean) <= Z * math.hypot(on_cpu.stderr, on_cuda.stderr)


@cuda
def test_exact_log_marginal_on_cuda_is_the_cpu_value():
    (model, _, x), (model_gpu, _, x_gpu) = pair("cpu"), pair("cuda")
    exact = exact_log_marginal(model_gpu, x_gpu)
    assert exact.device.type == "cuda"
    torch.testing.assert_close(exact.cpu(), exact_log_marginal(model, x), rtol=0, atol=1e-10)


@cuda
@pytest.mark.parametrize("compile", [False, None])
def test_elbo_and_iw_on_cuda_agree_with_the_cpu(compile):
    (model, guide, x), (model_gpu, guide_gpu, x_gpu) = pair("cpu"), pair("cuda")
    options = dict(seed=0, chunk_size=50, compile=compile)
    assert_agree(
        elbo(model, guide, x, num_particles=200, **options),
        elbo(model_gpu, guide_gpu, x_gpu, num_particles=200, **options),
    )
    assert_agree(
        iw_log_marginal(model, guide, x, num_samples=200, num_replicates=5, **options),
        iw_log_marginal(model_gpu, guide_gpu, x_gpu, num_samples=200, num_replicates=5, **options),
    )


@cuda
def test_compiled_iw_on_cuda_gives_the_eager_numbers():
    model, guide, x = pair("cuda")
    options = dict(num_samples=64, chunk_size=8, seed=0)
    eager = iw_log_marginal(model, guide, x, compile=False, **options)
    compiled = iw_log_marginal(model, guide, x, compile=True, **options)
    torch.testing.assert_close(compiled.per_point, eager.per_point, rtol=0, atol=1e-10)


@cuda
def test_ais_and_bdmc_on_cuda_agree_with_the_cpu():
    (model, guide, x), (model_gpu, guide_gpu, x_gpu) = pair("cpu"), pair("cuda")
    options = dict(num_steps=20, num_chains=16, seed=0)
    assert_agree(
        ais_log_marginal(model, guide, x, **options),
        ais_log_marginal(model_gpu, guide_gpu, x_gpu, **options),
    )
    on_cpu = bdmc(model, guide, x, simulate=False, **options)
    on_cuda = bdmc(model_gpu, guide_gpu, x_gpu, simulate=False, **options)
    assert_agree(on_cpu.lower, on_cuda.lower)
    assert_agree(on_cpu.upper, on_cuda.upper)


@cuda
def test_diagnose_and_gap_decomposition_on_cuda_agree_with_the_cpu():
    (model, guide, x), (model_gpu, guide_gpu, x_gpu) = pair("cpu"), pair("cuda")
    on_cpu, on_cuda = (
        diagnose(model, guide, x, seed=0),
        diagnose(model_gpu, guide_gpu, x_gpu, seed=0),
    )
    assert on_cuda.rate == pytest.approx(on_cpu.rate, abs=1e-9)  # analytic KL: no draws
    assert on_cuda.exact == pytest.approx(on_cpu.exact, abs=1e-9)
    allowed = Z * math.hypot(on_cpu.distortion_stderr, on_cuda.distortion_stderr)
    assert abs(on_cuda.distortion - on_cpu.distortion) <= allowed
    options = dict(num_samples=50, steps=10, seed=0)
    gaps = gap_decomposition(model_gpu, guide_gpu, x_gpu, **options)
    assert_agree(gap_decomposition(model, guide, x, **options).inference_gap, gaps.inference_gap)


@cuda
def test_check_bounds_passes_on_cuda():
    model, guide, x = pair("cuda")
    report = check_bounds(model, guide, x, num_samples=(1, 10), seed=0)
    assert report.exact.device.type == "cuda"
    assert report.elbo.per_point.device.type == "cuda"


@cuda
@pytest.mark.parametrize("jit", [None, False])
def test_fit_on_cuda_keeps_the_parameters_there_and_agrees_with_the_cpu(jit):
    """At a learning rate too small to move the parameters, step t's loss on either device
    estimates the same minibatch's -ELBO (the minibatches come from one CPU generator)."""
    runs = []
    for device in ("cpu", "cuda"):
        model, guide, x = pair(device)
        options = dict(steps=30, batch_size=16, lr=1e-9, num_particles=20, seed=0)
        runs.append(fit(model, guide, x, progress=False, jit=jit, **options).history.losses)
        assert all(p.device.type == device for p in [*model.parameters(), *guide.parameters()])
    differences = torch.tensor(runs[0]) - torch.tensor(runs[1])  # (steps,), independent
    stderr = differences.std().item() / math.sqrt(differences.numel())
    assert abs(differences.mean().item()) <= Z * stderr


@cuda
def test_a_resumed_cuda_run_ends_where_the_uninterrupted_run_ends(tmp_path):
    """The checkpoint holds the CUDA RNG state too: the resumed steps draw the same noise."""
    options = dict(batch_size=16, seed=0, progress=False, jit=False)
    model, guide, x = pair("cuda")
    uninterrupted = fit(model, guide, x, steps=12, **options)
    fit(*pair("cuda")[:2], x, steps=5, checkpoint=tmp_path / "run.pt", **options)
    resumed_model, resumed_guide, _ = pair("cuda")
    resumed = fit(resumed_model, resumed_guide, x, steps=12, resume=tmp_path / "run.pt", **options)
    torch.testing.assert_close(resumed.history.losses, uninterrupted.history.losses)
    for mine, theirs in zip(resumed_model.parameters(), model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-12)


def test_data_on_another_device_than_the_model_is_named_with_both_devices():
    model, guide, x = pair("cpu")
    model.to("meta")  # a second device on any machine: parameters without values
    with pytest.raises(ValueError, match=r"x is on cpu but the model's .* is on meta"):
        elbo(model, guide, x)
    with pytest.raises(ValueError, match=r"x is on cpu but the model's .* is on meta"):
        fit(model, guide, x, steps=1, progress=False)
