"""Saving and resuming a training run: exact resumption, atomic writes, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from guides import AmortizedGaussian
from inference import fit
from inference.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lvm_models import GaussianVAE, LinearGaussian, datasets

STEPS = 40
TRAINING = {"batch_size": 32, "seed": 0, "progress": False}


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return datasets.correlated_gaussian(num_data=200, data_dim=4, seed=0).x


def fresh_pair() -> tuple[GaussianVAE, AmortizedGaussian]:
    torch.manual_seed(1)
    return GaussianVAE(4, 2, hidden=(8,)), AmortizedGaussian(4, 2, hidden=(8,))


def parameters_of(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for module in modules for p in module.parameters()]


def test_resuming_reproduces_the_uninterrupted_run_exactly(data, tmp_path):
    model, guide = fresh_pair()
    uninterrupted = fit(model, guide, data, steps=STEPS, **TRAINING)
    expected = parameters_of(model, guide)

    model, guide = fresh_pair()
    fit(model, guide, data, steps=25, checkpoint=tmp_path / "run.pt", **TRAINING)
    model, guide = fresh_pair()  # a new process would start from fresh modules too
    resumed = fit(model, guide, data, steps=STEPS, resume=tmp_path / "run.pt", **TRAINING)

    for mine, theirs in zip(parameters_of(model, guide), expected):
        assert torch.equal(mine, theirs)
    assert resumed.history.losses == uninterrupted.history.losses


def test_checkpoints_are_written_every_n_steps_and_at_the_end(data, tmp_path):
    model, guide = fresh_pair()
    steps_seen = []
    path = tmp_path / "run.pt"

    def record(step, model, guide):
        steps_seen.append(load_checkpoint(path).step if path.exists() else None)

    fit(
        model,
        guide,
        data,
        steps=23,
        checkpoint=path,
        checkpoint_every=10,
        callback=record,
        callback_every=1,
        **TRAINING,
    )
    assert steps_seen[9] is None and steps_seen[10] == 10 and steps_seen[20] == 20
    assert load_checkpoint(path).step == 23


def test_a_failed_write_leaves_the_previous_checkpoint_intact(data, tmp_path, monkeypatch):
    model, guide = fresh_pair()
    path = tmp_path / "run.pt"
    fit(model, guide, data, steps=5, checkpoint=path, **TRAINING)
    state = load_checkpoint(path)

    def interrupted_save(payload, file):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, state)
    monkeypatch.undo()
    assert load_checkpoint(path).step == 5
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


def test_a_corrupt_file_is_named(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
        load_checkpoint(path)


def test_a_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint written by lvm-suite's fit"):
        load_checkpoint(path)


def test_a_file_that_would_run_code_is_refused_by_weights_only_loading(tmp_path):
    path = tmp_path / "pickle.pt"
    torch.save({"format": "lvm-suite fit checkpoint", "payload": ValueError("code")}, path)
    with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
        load_checkpoint(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_a_checkpoint_of_another_model_is_refused(data, tmp_path):
    model, guide = fresh_pair()
    fit(model, guide, data, steps=3, checkpoint=tmp_path / "run.pt", **TRAINING)
    other = LinearGaussian(4, 2)
    with pytest.raises(CheckpointError, match="for another model or guide"):
        fit(other, guide, data, steps=6, resume=tmp_path / "run.pt", **TRAINING)


def test_resuming_with_other_options_is_refused(data, tmp_path):
    model, guide = fresh_pair()
    fit(model, guide, data, steps=3, checkpoint=tmp_path / "run.pt", **TRAINING)
    model, guide = fresh_pair()
    with pytest.raises(CheckpointError, match="other training options.*'lr'"):
        fit(model, guide, data, steps=6, lr=0.5, resume=tmp_path / "run.pt", **TRAINING)


def lvm_fit(*arguments: str) -> subprocess.Popen:
    common = ["--eval-points", "20", "--num-samples", "1", "--quiet", "--batch-size", "64"]
    command = [sys.executable, "-m", "inference.studies.cli", "fit", *arguments, *common]
    # One thread each: the runs overlap, and two multi-threaded ones would fight for 2 cores.
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        # Ctrl-C as at a terminal, even where this test runs in the background (a shell starts
        # background jobs with SIGINT ignored, and Python then keeps ignoring it).
        preexec_fn=_interruptible,
    )


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_run_interrupted_midway_resumes_from_the_command_line_to_the_same_result(tmp_path):
    steps = 800
    run = ["--model", "gaussian-vae", "--data", "two-moons", "--steps", str(steps), "--seed", "3"]
    reference = lvm_fit(*run, "--checkpoint", str(tmp_path / "reference.pt"))

    interrupted_path = tmp_path / "interrupted.pt"
    interrupted = lvm_fit(*run, "--checkpoint", str(interrupted_path), "--checkpoint-every", "50")
    # No deadline: a slow machine only makes the first checkpoint come later.
    while not interrupted_path.exists() and interrupted.poll() is None:
        time.sleep(0.05)
    interrupted.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = interrupted.communicate()
    assert interrupted.returncode == 130, stderr
    stopped_at = load_checkpoint(interrupted_path).step
    assert 0 < stopped_at < steps

    resumed = lvm_fit("--resume", str(interrupted_path))
    assert resumed.wait() == 0, resumed.stderr.read()
    assert reference.wait() == 0, reference.stderr.read()
    final, expected = load_checkpoint(interrupted_path), load_checkpoint(tmp_path / "reference.pt")
    assert final.step == expected.step == steps
    for key, value in expected.parameters.items():
        assert torch.equal(final.parameters[key], value), key


# --- Integrity: a damaged, incomplete or mismatched checkpoint is refused, by name ---


@pytest.fixture
def saved_run(data, tmp_path):
    model, guide = fresh_pair()
    path = tmp_path / "run.pt"
    fit(model, guide, data, steps=10, checkpoint=path, **TRAINING)
    return path


def test_every_flipped_byte_of_a_checkpoint_is_refused_or_harmless(saved_run):
    original = saved_run.read_bytes()
    state = load_checkpoint(saved_run)
    positions = torch.linspace(0, len(original) - 1, 60).long().tolist()
    for position in positions:
        damaged = bytearray(original)
        damaged[position] ^= 0xFF
        saved_run.write_bytes(bytes(damaged))
        try:
            loaded = load_checkpoint(saved_run)
        except CheckpointError:
            continue
        # A flip that leaves the file loadable must leave its contents exactly as they were.
        assert loaded.step == state.step and loaded.losses == state.losses
        for key, value in state.parameters.items():
            assert torch.equal(loaded.parameters[key], value)


def test_a_half_formed_checkpoint_is_refused_before_any_state_is_touched(tmp_path):
    import hashlib
    import io

    from inference.training.checkpoint import FORMAT, VERSION

    body = io.BytesIO()
    torch.save({"step": 3}, body)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "sha256": hashlib.sha256(body.getvalue()).hexdigest(),
        "body": body.getvalue(),
    }
    torch.save(payload, tmp_path / "half.pt")
    with pytest.raises(CheckpointError, match="incomplete: no .*'parameters'"):
        load_checkpoint(tmp_path / "half.pt")


def test_a_garbage_rng_state_is_refused(saved_run):
    state = load_checkpoint(saved_run)
    state.rng_state = torch.zeros(3, dtype=torch.uint8)
    save_checkpoint(saved_run, state)
    with pytest.raises(CheckpointError, match="rng_state is not a torch RNG state"):
        load_checkpoint(saved_run)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda x: x.flip(0), "data_sha256"),  # the same rows, permuted: same shape and sum
        (lambda x: x + torch.linspace(-1e-3, 1e-3, x.numel()).reshape(x.shape), "data_sha256"),
    ],
)
def test_resuming_with_other_data_is_refused(data, saved_run, change, named):
    model, guide = fresh_pair()
    with pytest.raises(CheckpointError, match=named):
        fit(model, guide, change(data), steps=20, resume=saved_run, **TRAINING)


def test_resuming_with_another_optimizer_or_jit_is_refused(data, saved_run):
    import pyro.optim

    model, guide = fresh_pair()
    with pytest.raises(CheckpointError, match="optimizer"):
        fit(
            model,
            guide,
            data,
            steps=20,
            resume=saved_run,
            optimizer=pyro.optim.SGD({"lr": 0.01}),
            **TRAINING,
        )
    model, guide = fresh_pair()
    other_path = not load_checkpoint(saved_run).options["jit"]
    with pytest.raises(CheckpointError, match="jit"):
        fit(model, guide, data, steps=20, resume=saved_run, jit=other_path, **TRAINING)


def test_numpy_options_and_path_metadata_are_saved_as_plain_values_and_resume(data, tmp_path):
    import numpy as np

    path = tmp_path / "run.pt"
    options = {"lr": np.float64(0.01), "beta": np.float32(1.0), **TRAINING}
    model, guide = fresh_pair()
    fit(model, guide, data, steps=10, checkpoint=path, checkpoint_info={"out": path}, **options)
    assert load_checkpoint(path).info == {"out": str(path)}
    model, guide = fresh_pair()
    fit(model, guide, data, steps=20, resume=path, **options)


@pytest.mark.parametrize(
    ("where", "error", "message"),
    [
        (lambda tmp: tmp, ValueError, "is a directory"),
        (lambda tmp: tmp / "a_file" / "run.pt", ValueError, "is a file, not a folder"),
        (lambda tmp: 123, TypeError, "checkpoint must be a str or Path; got int"),
        (lambda tmp: "", ValueError, "checkpoint must be a file path"),
    ],
)
def test_a_checkpoint_path_that_cannot_be_written_is_refused_before_training(
    data, tmp_path, where, error, message
):
    (tmp_path / "a_file").write_text("not a folder")
    steps = []
    model, guide = fresh_pair()
    with pytest.raises(error, match=message):
        fit(
            model,
            guide,
            data,
            steps=5,
            checkpoint=where(tmp_path),
            callback=lambda step, *_: steps.append(step),
            callback_every=1,
            **TRAINING,
        )
    assert steps == []


@pytest.mark.parametrize(
    ("first", "then"), [({"gradient": "dreg"}, {}), ({}, {"gradient": "dreg"})]
)
def test_a_dreg_run_and_a_plain_iwae_run_do_not_resume_each_other(data, tmp_path, first, then):
    """Options recorded only where they depart from the default are compared both ways."""
    iwae = {"objective": "iwae", "num_particles": 3}
    model, guide = fresh_pair()
    fit(model, guide, data, steps=3, checkpoint=tmp_path / "run.pt", **iwae, **first, **TRAINING)
    model, guide = fresh_pair()
    with pytest.raises(CheckpointError, match="other training options.*'gradient'"):
        fit(model, guide, data, steps=6, resume=tmp_path / "run.pt", **iwae, **then, **TRAINING)
