"""Specification of a researcher's own data: datasets.from_file, datasets.split, and the CLI's
--data FILE / --test-fraction / --eval-data."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.studies.cli import main
from lvm_models.datasets import DataFileError, Dataset, from_file, split

POINTS = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)


def _write(path: Path, values: np.ndarray) -> Path:
    """``values`` saved in the format of ``path``'s extension (as a researcher would)."""
    if path.suffix == ".npy":
        np.save(path, values)
    elif path.suffix == ".npz":
        np.savez(path, points=values)
    elif path.suffix == ".csv":
        header = ",".join(f"feature_{d}" for d in range(values.shape[1]))
        np.savetxt(path, values, delimiter=",", header=header, comments="", fmt="%.9g")
    else:
        torch.save(torch.from_numpy(values), path)
    return path


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv", ".pt"])
def test_every_format_reads_back_the_saved_float32_points(tmp_path, suffix):
    data = from_file(_write(tmp_path / f"points{suffix}", POINTS))
    assert isinstance(data, Dataset)
    assert data.x.dtype == torch.float32 and torch.equal(data.x, torch.from_numpy(POINTS))
    assert data.name == str(tmp_path / f"points{suffix}") and not data.binary
    assert data.log_density is None


def test_points_of_several_dimensions_are_flattened_in_row_major_order(tmp_path):
    images = np.arange(5 * 2 * 3, dtype=np.int64).reshape(5, 2, 3)
    data = from_file(_write(tmp_path / "images.npy", images))
    assert data.x.shape == (5, 6)
    assert torch.equal(data.x[1], torch.arange(6.0, 12.0))


def test_a_key_picks_one_array_of_an_npz_or_a_dict_of_tensors(tmp_path):
    np.savez(tmp_path / "both.npz", train=POINTS, test=POINTS[:5])
    torch.save({"train": torch.from_numpy(POINTS), "test": torch.zeros(3, 4)}, tmp_path / "d.pt")
    assert from_file(tmp_path / "both.npz", key="test").x.shape == (5, 4)
    assert from_file(tmp_path / "d.pt", key="test").x.shape == (3, 4)


def test_binary_is_inferred_required_or_switched_off(tmp_path):
    bits = _write(tmp_path / "bits.npy", (POINTS > 0).astype(np.uint8))
    assert from_file(bits).binary and not from_file(bits, binary=False).binary
    with pytest.raises(DataFileError, match=r"binary=True, but it holds 0\.1257 at index \(0, 0\)"):
        from_file(_write(tmp_path / "real.npy", POINTS), binary=True)


class CodeOnUnpickling:
    """Pickles to a call of ``Path.touch``: loading it must never make the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _object_npy(folder: Path) -> Path:
    path = folder / "objects.npy"
    np.save(path, np.array([[1, "a"], [2, "b"]], dtype=object), allow_pickle=True)
    return path


def _text_csv(folder: Path) -> Path:
    path = folder / "text.csv"
    path.write_text("a,b\n1,2\n3,x\n")
    return path


def _ragged_csv(folder: Path) -> Path:
    path = _write(folder / "ragged.csv", POINTS)  # a header, then rows 2..41
    path.write_text(path.read_text() + "1,2,3\n")
    return path


def _two_arrays(folder: Path) -> Path:
    np.savez(folder / "two.npz", train=POINTS, test=POINTS)
    return folder / "two.npz"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: _write(d / "x.txt", POINTS), r"unknown extension '\.txt'; known: \.npy"),
        (lambda d: d / "missing.npy", r"'.*missing\.npy' does not exist"),
        (_two_arrays, r"holds 2 arrays \(train, test\); name one with key="),
        (_text_csv, r"row 3, column 2: 'x' is not a number"),
        (_ragged_csv, r"row 42 has 3 columns; the first row of numbers has 4"),
        (
            lambda d: _write(d / "nan.npy", _with_non_finite(POINTS)),
            r"2 entries are NaN or infinite \(in float32\); the first at index \(3, 1\)",
        ),
        (lambda d: _write(d / "flat.npy", POINTS[:, 0]), r"got shape \(40,\)"),
        (lambda d: _write(d / "one.npy", POINTS[:1]), r"N >= 2 .* got shape \(1, 4\)"),
        (_object_npy, "holds Python objects"),
        (lambda d: _write(d / "text.npy", np.array([["a", "b"], ["c", "d"]])), "not numeric"),
        (lambda d: _write(d / "c.npy", POINTS.astype(np.complex64)), "not numeric"),
    ],
)
def test_a_bad_file_gets_a_named_error(tmp_path, make, message):
    with pytest.raises(DataFileError, match=message):
        from_file(make(tmp_path))


def _with_non_finite(values: np.ndarray) -> np.ndarray:
    values = values.copy()
    values[3, 1], values[7, 0] = np.nan, np.inf
    return values


def test_loading_a_torch_file_never_unpickles_code(tmp_path):
    marker = tmp_path / "ran"
    torch.save(CodeOnUnpickling(marker), tmp_path / "evil.pt")
    with pytest.raises(DataFileError, match="holds Python objects"):
        from_file(tmp_path / "evil.pt")
    assert not marker.exists()
    pickle.loads(pickle.dumps(CodeOnUnpickling(marker)))  # the payload does run when unpickled
    assert marker.exists()


def test_split_is_seeded_disjoint_and_keeps_the_row_order():
    data = Dataset("points", torch.arange(20.0).reshape(10, 2), "ten points")
    train, held_out = split(data, 0.3, seed=4)
    again_train, again_held_out = split(data, 0.3, seed=4)
    assert torch.equal(held_out.x, again_held_out.x) and torch.equal(train.x, again_train.x)
    assert held_out.x.shape == (3, 2) and train.x.shape == (7, 2)
    rows = torch.cat([train.x, held_out.x])[:, 0].sort().values
    assert torch.equal(rows, torch.arange(0.0, 20.0, 2.0))
    assert torch.all(held_out.x[1:, 0] > held_out.x[:-1, 0])
    with pytest.raises(ValueError, match=r"test_fraction must be a number in \(0, 1\); got 1"):
        split(data, 1, seed=0)


COMMON = ["--eval-points", "12", "--num-samples", "1", "3", "--quiet"]


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv", ".pt"])
def test_every_format_trains_with_lvm_fit_and_evaluates_with_compare_from(tmp_path, suffix):
    data = _write(tmp_path / f"points{suffix}", POINTS)
    run, trained, evaluated = (tmp_path / name for name in ("run.pt", "fit.json", "cmp.json"))
    fit_argv = ["fit", "--data", str(data), "--latent-dim", "1", "--steps", "5"]
    assert main([*fit_argv, "--save", str(run), "--json", str(trained), *COMMON]) == 0
    assert main(["compare", "--from", str(run), "--json", str(evaluated), *COMMON]) == 0
    after_fit, after_compare = (json.loads(p.read_text()) for p in (trained, evaluated))
    assert after_fit["data"] == str(data) == after_compare["data"]
    assert after_compare["comparison"] == after_fit["comparison"]


def test_fit_evaluates_on_the_held_out_rows_with_test_fraction(tmp_path, capsys):
    data = _write(tmp_path / "points.npy", POINTS)
    report = tmp_path / "fit.json"
    argv = ["fit", "--data", str(data), "--test-fraction", "0.25", "--steps", "3"]
    assert main([*argv, "--json", str(report), *COMMON]) == 0
    evaluated_on = json.loads(report.read_text())["evaluated_on"]
    assert "10 held-out rows (test_fraction 0.25, seed 0)" in evaluated_on
    assert "30 training rows" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "{tmp}/missing.npy"], "does not exist"),
        (["--data", "{tmp}/bits.npy", "--model", "bernoulli-vae"], "must be binary (0 or 1)"),
        (["--eval-data", "{tmp}/narrow.npy"], "has 3 columns but this LinearGaussian"),
    ],
)
def test_fit_refuses_bad_data_files_in_one_line(tmp_path, capsys, argv, message):
    _write(tmp_path / "bits.npy", POINTS)  # not binary, despite the name
    _write(tmp_path / "narrow.npy", POINTS[:, :3])
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    code = main(["fit", "--steps", "2", *argv, *COMMON])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1
