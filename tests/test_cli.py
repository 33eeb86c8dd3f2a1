from __future__ import annotations

import argparse
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


def test_help_and_version_load_no_numerical_library():
    # The heavy libraries load inside the command that needs them, not for --help.
    probe = (
        "import sys\n"
        "from inference.studies.cli import main\n"
        "for argv in (['--help'], ['--version'], ['collapse', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted({'matplotlib', 'jax', 'numpyro', 'arviz', 'sklearn'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_version_is_the_installed_packages(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"lvm {version('lvm-suite')}"


def _threads_during_the_command(monkeypatch, argv):
    """torch's thread count while `lvm list` runs, and after main returns."""
    import torch

    from inference.studies import cli

    seen = []
    monkeypatch.setattr(cli, "_list", lambda args: seen.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    assert main(argv) == 0
    assert torch.get_num_threads() == before  # main leaves the caller's setting as it was
    return seen[0]


def test_threads_default_to_one_and_follow_the_option_or_the_environment(monkeypatch):
    monkeypatch.delenv("LVM_NUM_THREADS", raising=False)
    assert _threads_during_the_command(monkeypatch, ["list"]) == 1
    assert _threads_during_the_command(monkeypatch, ["--threads", "2", "list"]) == 2
    assert _threads_during_the_command(monkeypatch, ["list", "--threads", "2"]) == 2
    monkeypatch.setenv("LVM_NUM_THREADS", "2")
    assert _threads_during_the_command(monkeypatch, ["list"]) == 2
    assert _threads_during_the_command(monkeypatch, ["--threads", "1", "list"]) == 1


def test_every_option_states_its_default_in_its_help():
    from inference.studies.cli import build_parser

    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, command in [("lvm", parser), *commands.choices.items()]:
        formatter = command._get_formatter()
        for action in command._actions:
            says_nothing = action.default is None or action.default is False
            if not action.option_strings or says_nothing or action.default == argparse.SUPPRESS:
                continue
            if action.dest in ("help", "version"):
                continue
            text = formatter._get_help_string(action) if action.help else ""
            if "default" not in text:
                missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []


@pytest.mark.parametrize(("quick", "folder"), [(["--quick"], "results/quick"), ([], "results")])
@pytest.mark.parametrize("command", ["collapse", "frontier"])
def test_quick_runs_write_to_their_own_folder_by_default(
    command, quick, folder, tmp_path, monkeypatch, capsys
):
    # The default folder is refused before any work when a file stands in its place.
    monkeypatch.chdir(tmp_path)
    (tmp_path / folder).parent.mkdir(exist_ok=True)
    (tmp_path / folder).write_text("")
    assert main([command, *quick]) == 2
    assert f"--out {folder!r} is a file" in capsys.readouterr().err


def test_a_resumed_runs_bar_starts_at_its_checkpoints_step(tmp_path, capsys):
    run = tmp_path / "run.pt"
    common = ["fit", "--eval-points", "10", "--num-samples", "1"]
    assert main([*common, "--steps", "10", "--quiet", "--checkpoint", str(run)]) == 0
    capsys.readouterr()
    assert main([*common, "--steps", "20", "--resume", str(run)]) == 0
    bar = capsys.readouterr().err
    assert "resumed from step 10" in bar and "20/20" in bar and " 0/10" not in bar


def test_diagnosis_pairs_carry_units_and_say_what_the_gap_is(capsys):
    from inference.studies.cli import _print_pairs

    _print_pairs({"rate": 1.5, "active_units": 2, "gap": 0.25, "ppca_exact_log_px": -3.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rate", "1.5000", "nats", "per", "data", "point"]
    assert "dimensions" in lines[1] and lines[3].endswith("nats per data point")
    assert lines[-1].startswith("gap: the reference log p(x) minus the ELBO")
