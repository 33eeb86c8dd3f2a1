from __future__ import annotations

import json
import subprocess
import sys

import pytest

from inference.studies.cli import main


def test_fit_writes_json_with_diagnosis_and_comparison(tmp_path, capsys):
    out = tmp_path / "fit.json"
    code = main(
        [
            "fit",
            "--steps",
            "50",
            "--eval-points",
            "50",
            "--num-samples",
            "1",
            "10",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["model"] == "ppca" and len(report["history"]["losses"]) == 50
    estimators = [row["estimator"] for row in report["comparison"]["rows"]]
    assert estimators == ["elbo", "iw", "iw", "exact"]
    assert "mean log p(x)" in capsys.readouterr().out


def test_list_names_data_models_and_guides(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "two-moons" in text and "gaussian-vae-full" in text and "exact-posterior" in text


@pytest.mark.parametrize(
    ("argument", "value"), [("--model", "nope"), ("--guide", "nope"), ("--data", "nope")]
)
def test_unknown_names_exit_2_with_one_line(argument, value):
    result = subprocess.run(
        [sys.executable, "-m", "inference.studies.cli", "fit", argument, value, "--steps", "1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unknown" in result.stderr and value in result.stderr


def test_exact_prints_closed_form_ppca_and_gaussian_references(capsys):
    assert main(["exact", "--data", "correlated-gaussian"]) == 0
    text = capsys.readouterr().out
    assert "ppca_exact_log_px" in text and "gaussian_full_ml_log_px" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "--steps", "-1"],
        ["fit", "--batch-size", "0"],
        ["compare", "--num-samples", "0"],
        ["collapse", "--seed", "-1"],
        ["exact", "--latent-dim", "two"],
    ],
)
def test_bad_options_exit_2_naming_the_option(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {argv[1]}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["collapse", "frontier", "fit", "compare", "exact", "list"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: lvm {command}" in capsys.readouterr().out


def test_sandwich_writes_a_table_json_and_plot_with_the_exact_value(tmp_path, capsys):
    out = tmp_path / "sandwich"
    code = main(
        [
            "sandwich",
            "--data",
            "correlated-gaussian",
            "--model",
            "factor-analysis",
            "--latent-dim",
            "2",
            "--steps",
            "30",
            "--ais-steps",
            "3",
            "30",
            "--chains",
            "4",
            "--eval-points",
            "6",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "sandwich.json").read_text())
    assert [row["num_steps"] for row in report["rows"]] == [3, 30]
    assert report["exact"] is not None  # factor analysis: the closed form of the simulated data
    assert (out / "sandwich.png").stat().st_size > 0
    assert "upper" in capsys.readouterr().out


def test_compare_with_ais_reference_adds_an_ais_row(tmp_path):
    run, out = tmp_path / "run.pt", tmp_path / "compare.json"
    assert (
        main(["fit", "--steps", "20", "--eval-points", "10", "--quiet", "--checkpoint", str(run)])
        == 0
    )
    code = main(
        [
            "compare",
            "--from",
            str(run),
            "--eval-points",
            "10",
            "--num-samples",
            "1",
            "10",
            "--reference",
            "ais",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    estimators = [row["estimator"] for row in json.loads(out.read_text())["comparison"]["rows"]]
    assert estimators == ["elbo", "iw", "iw", "ais", "exact"]


def test_compare_evaluates_the_saved_parameters_without_training(tmp_path, capsys):
    run, trained, evaluated = (tmp_path / name for name in ("run.pt", "fit.json", "cmp.json"))
    common = ["--eval-points", "12", "--num-samples", "1", "5", "--quiet"]
    fit_argv = ["fit", "--steps", "40", "--checkpoint", str(run), "--json", str(trained)]
    assert main([*fit_argv, *common]) == 0
    assert main(["compare", "--from", str(run), "--json", str(evaluated), *common]) == 0
    assert "(step 40)" in capsys.readouterr().out
    after_fit, after_compare = (json.loads(p.read_text()) for p in (trained, evaluated))
    # The same parameters and the same seed: the same figures, to the last digit.
    assert after_compare["diagnosis"] == after_fit["diagnosis"]
    assert after_compare["comparison"] == after_fit["comparison"]


def test_compare_needs_a_saved_run_and_fit_needs_steps(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--eval-points", "10"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--steps", "0"])
    assert "lvm fit: error: argument --steps: must be >= 1; got 0" in capsys.readouterr().err


def test_a_resumed_run_refuses_a_flag_that_differs_from_its_checkpoint(tmp_path, capsys):
    run = tmp_path / "run.pt"
    common = ["fit", "--eval-points", "20", "--num-samples", "1", "--quiet"]
    assert main([*common, "--steps", "10", "--lr", "0.01", "--checkpoint", str(run)]) == 0
    capsys.readouterr()
    assert main([*common, "--resume", str(run), "--steps", "20", "--lr", "0.5"]) == 2
    assert "--lr 0.5 differs from the checkpoint's 0.01" in capsys.readouterr().err
    # The same value, or no flag at all, resumes.
    assert main([*common, "--resume", str(run), "--steps", "20", "--lr", "0.01"]) == 0
