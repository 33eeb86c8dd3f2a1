"""Specification of saved runs: save_run / load_run, and `lvm fit --save` evaluated later by
`lvm compare`, `lvm diagnose` and `lvm sandwich --from`, with no training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pyro.nn import PyroModule
from test_data_files import CodeOnUnpickling

from inference import RunError, RunSpec, load_run, save_run
from inference.studies.cli import main
from inference.studies.registry import GUIDES, MODELS
from lvm_models.datasets import correlated_gaussian

DATA = correlated_gaussian(num_data=30, data_dim=4, seed=0)
COMMON = ["--eval-points", "12", "--quiet"]
FIT = ["fit", "--data", "correlated-gaussian", "--steps", "8", "--latent-dim", "1"]


def _trained_pair(model_name: str, guide_name: str, latent_dim: int = 2):
    """A registry pair with parameters moved away from their initial values (as if trained)."""
    torch.manual_seed(0)
    model = MODELS[model_name].build(4, latent_dim)
    guide = GUIDES[guide_name].build(model, 30)
    with torch.no_grad():
        for parameter in [*model.parameters(), *guide.parameters()]:
            parameter.add_(torch.randn_like(parameter))
    return model, guide


@pytest.mark.parametrize(
    ("model_name", "guide_name"),
    [
        ("ppca", "amortized-gaussian"),
        ("factor-analysis", "exact-posterior"),
        ("gaussian-mixture", "amortized-categorical"),
        ("gaussian-vae", "mean-field"),
    ],
)
def test_load_run_rebuilds_the_saved_pair_and_spec(tmp_path, model_name, guide_name):
    model, guide = _trained_pair(model_name, guide_name)
    spec = RunSpec.of(model_name, guide_name, 2, DATA, seed=3, options={"steps": 10})
    save_run(tmp_path / "run.pt", model, guide, spec)
    loaded_model, loaded_guide, loaded_spec = load_run(tmp_path / "run.pt")
    assert loaded_spec == spec and loaded_spec.data_shape == (30, 4)
    for saved, loaded in ((model, loaded_model), (guide, loaded_guide)):
        assert type(loaded) is type(saved)
        expected, restored = saved.state_dict(), loaded.state_dict()
        assert set(restored) == set(expected)
        assert all(torch.equal(value, expected[key]) for key, value in restored.items())


def test_loading_a_run_leaves_the_global_random_state_alone(tmp_path):
    model, guide = _trained_pair("ppca", "amortized-gaussian")
    save_run(
        tmp_path / "run.pt", model, guide, RunSpec.of("ppca", "amortized-gaussian", 2, DATA, seed=0)
    )
    state = torch.get_rng_state()
    load_run(tmp_path / "run.pt")
    assert torch.equal(torch.get_rng_state(), state)


class _OwnModel(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(4))


@pytest.mark.parametrize(
    ("spec_names", "model_kind", "message"),
    [
        (("my-model", "amortized-gaussian"), "ppca", "unknown model 'my-model'; known: "),
        (("ppca", "amortized-gaussian"), "own", "'ppca' is a LinearGaussian, got a _OwnModel"),
        (("ppca", "amortized-gaussian"), "gaussian-vae", "is a LinearGaussian, got a GaussianVAE"),
    ],
)
def test_a_pair_the_registry_does_not_build_is_refused_at_save_time(
    tmp_path, spec_names, model_kind, message
):
    if model_kind == "own":
        model, (_, guide) = _OwnModel(), _trained_pair("ppca", "amortized-gaussian")
    else:
        model, guide = _trained_pair(model_kind, "amortized-gaussian")
    spec = RunSpec.of(*spec_names, 2, DATA, seed=0)
    with pytest.raises(RunError, match=message):
        save_run(tmp_path / "run.pt", model, guide, spec)
    assert not (tmp_path / "run.pt").exists()


def test_a_spec_with_other_sizes_than_the_pair_is_refused(tmp_path):
    model, guide = _trained_pair("ppca", "amortized-gaussian", latent_dim=2)
    with pytest.raises(RunError, match="registry entry 'ppca' with the spec's sizes builds other"):
        save_run(
            tmp_path / "run.pt",
            model,
            guide,
            RunSpec.of("ppca", "amortized-gaussian", 3, DATA, seed=0),
        )


def test_load_run_refuses_damaged_foreign_and_code_carrying_files(tmp_path):
    model, guide = _trained_pair("ppca", "amortized-gaussian")
    run = save_run(
        tmp_path / "run.pt", model, guide, RunSpec.of("ppca", "amortized-gaussian", 2, DATA, seed=0)
    )
    payload = torch.load(run, weights_only=True)
    payload["body"] = payload["body"][:-1] + bytes([payload["body"][-1] ^ 1])
    torch.save(payload, tmp_path / "damaged.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    torch.save(CodeOnUnpickling(tmp_path / "ran"), tmp_path / "code.pt")
    np.save(tmp_path / "data.npy", DATA.x.numpy())
    for name, message in [
        ("damaged.pt", "is damaged: its contents do not match their checksum"),
        ("foreign.pt", "is not a run saved by lvm-suite"),
        ("code.pt", "holds objects that only unpickling code would load"),
        ("data.npy", "holds objects that only unpickling code would load"),
        ("missing.pt", "does not exist"),
    ]:
        with pytest.raises(RunError, match=message):
            load_run(tmp_path / name)
    assert not (tmp_path / "ran").exists()


def _fit_and_save(tmp_path: Path, *extra: str) -> tuple[Path, dict]:
    run, report = tmp_path / "run.pt", tmp_path / "fit.json"
    argv = [*FIT, *extra, "--num-samples", "1", "4", "--save", str(run), "--json", str(report)]
    assert main([*argv, *COMMON]) == 0
    return run, json.loads(report.read_text())


def test_a_saved_run_evaluated_later_gives_the_numbers_of_the_end_of_training(tmp_path, capsys):
    run, after_fit = _fit_and_save(tmp_path, "--test-fraction", "0.2")
    assert f"run saved to {str(run)!r}" in capsys.readouterr().out.splitlines()[-1]
    evaluated = tmp_path / "compare.json"
    argv = ["compare", "--from", str(run), "--num-samples", "1", "4", "--json", str(evaluated)]
    assert main([*argv, *COMMON]) == 0
    after_compare = json.loads(evaluated.read_text())
    assert "held-out rows" in after_compare["evaluated_on"]
    assert after_compare["evaluated_on"] == after_fit["evaluated_on"]
    assert after_compare["comparison"] == after_fit["comparison"]
    assert after_compare["diagnosis"] == after_fit["diagnosis"]


def test_compare_from_a_run_takes_more_samples_and_another_data_file(tmp_path):
    run, _ = _fit_and_save(tmp_path)
    test_file, report = tmp_path / "test.npy", tmp_path / "compare.json"
    np.save(test_file, correlated_gaussian(num_data=20, data_dim=8, seed=5).x.numpy())
    argv = ["compare", "--from", str(run), "--eval-data", str(test_file), "--json", str(report)]
    assert main([*argv, "--num-samples", "1", "10", "50", *COMMON]) == 0
    comparison = json.loads(report.read_text())
    rows = comparison["comparison"]["rows"]
    assert [row["num_samples"] for row in rows if row["estimator"] == "iw"] == [1, 10, 50]
    assert comparison["evaluated_on"].startswith("8-D data from test.npy, N=20")


def test_diagnose_from_a_run_prints_the_diagnosis_of_the_end_of_training(tmp_path, capsys):
    run, after_fit = _fit_and_save(tmp_path)
    report = tmp_path / "diagnose.json"
    capsys.readouterr()
    assert main(["diagnose", "--from", str(run), "--json", str(report), *COMMON]) == 0
    assert json.loads(report.read_text())["diagnosis"] == after_fit["diagnosis"]
    text = capsys.readouterr().out
    assert "nats per data point" in text and "active_units" in text
    assert "mean log p(x)" not in text  # no table of bounds: that is `lvm compare`


def test_sandwich_from_a_run_runs_bdmc_on_the_saved_pair_without_training(tmp_path, capsys):
    run, _ = _fit_and_save(tmp_path)
    out = tmp_path / "sandwich"
    argv = ["sandwich", "--from", str(run), "--ais-steps", "3", "--chains", "2"]
    assert main([*argv, "--eval-points", "4", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "sandwich.json").read_text())
    assert [row["num_steps"] for row in report["rows"]] == [3]
    assert report["exact"] is not None  # ppca: the closed form of the simulated data
    assert main([*argv, "--model", "ppca", "--out", str(out)]) == 2
    assert (
        "--from takes the pair and its data from the run; drop --model" in capsys.readouterr().err
    )


def test_load_run_reads_a_checkpoint_of_lvm_fit_with_the_same_parameters(tmp_path):
    run, checkpoint = tmp_path / "run.pt", tmp_path / "checkpoint.pt"
    argv = [*FIT, "--num-samples", "1", "--save", str(run), "--checkpoint", str(checkpoint)]
    assert main([*argv, *COMMON]) == 0
    (model, guide, spec), (from_checkpoint, guide_2, spec_2) = load_run(run), load_run(checkpoint)
    for saved, restored in ((model, from_checkpoint), (guide, guide_2)):
        expected = saved.state_dict()
        assert all(torch.equal(value, expected[k]) for k, value in restored.state_dict().items())
    assert spec_2.data_sha256 == spec.data_sha256 and spec_2.options["steps"] == 8


def test_compare_refuses_a_run_whose_data_file_changed(tmp_path, capsys):
    data = tmp_path / "points.npy"
    np.save(data, DATA.x.numpy())
    run = tmp_path / "run.pt"
    argv = ["fit", "--data", str(data), "--steps", "2", "--latent-dim", "1", "--save", str(run)]
    assert main([*argv, "--num-samples", "1", *COMMON]) == 0
    np.save(data, DATA.x.numpy()[:20])
    capsys.readouterr()
    assert main(["compare", "--from", str(run), "--num-samples", "1", *COMMON]) == 2
    assert "differ from those the run was trained on" in capsys.readouterr().err
