"""More rows of the bad-input table: sizes in constructors, the beta sweep, the command line.

Rows as in ``test_bad_input.py``: what is wrong, the call, the exception and a pattern of the
first line of its message. The command line reports bad input on stderr with exit code 2,
before it computes anything; its checks are separate tests below.
"""

from __future__ import annotations

import os

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from test_bad_input import test_bad_input_gets_an_error_naming_the_problem as check_row

from guides import (
    AmortizedCategorical,
    AmortizedGaussian,
    BatchNormGaussian,
    CommittedRateGaussian,
    MeanField,
    NonStandardPriorError,
    PriorGuide,
    check_standard_normal_prior,
)
from inference import IWAE, CyclicalAnnealing, fit, rate_distortion
from inference.studies.cli import main
from inference.studies.frontier import linear_beta_optimum
from inference.training.aggressive import AggressiveTraining
from lvm_models import (
    AutoregressiveVAE,
    BernoulliVAE,
    GaussianMixture,
    GaussianVAE,
    LinearGaussian,
    datasets,
)

D, K = 4, 2
X = torch.randn(6, D)
WIDTHS = "hidden must be a sequence of positive integer widths"


def never_called(*_: object) -> None:
    raise AssertionError("built a model or guide before checking the sweep's arguments")


def sweep(**options: object):
    """A sweep whose factories fail if called: every check must come before any building."""
    return rate_distortion(
        never_called, never_called, X, **({"betas": (1.0,), "steps": 1} | options)
    )


def shifted_prior(x: torch.Tensor) -> None:
    """A model whose prior is N(1, I): a rate floor measured from N(0, I) would not hold."""
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.ones(K), 1.0).to_event(1))


BAD_INPUTS = [
    # (what is wrong, call, exception, message pattern)
    (
        "a data set's seed beyond torch's range",
        lambda: datasets.load("two-moons", seed=2**64),
        ValueError,
        r"seed must be None or an integer in \[0, 2\*\*63 - 1\]; got 18446744073709551616",
    ),
    (
        "a fractional number of points for a data set",
        lambda: datasets.load("independent-gaussian", num_data=2.5),
        ValueError,
        "num_data must be an integer >= 1; got 2.5",
    ),
    (
        "AmortizedGaussian with data_dim 0",
        lambda: AmortizedGaussian(0, K),
        ValueError,
        "data_dim must be an integer >= 1; got 0",
    ),
    (
        "AmortizedGaussian with a negative latent_dim",
        lambda: AmortizedGaussian(D, -2),
        ValueError,
        "latent_dim must be an integer >= 1; got -2",
    ),
    (
        "AmortizedGaussian with a zero hidden width",
        lambda: AmortizedGaussian(D, K, hidden=(8, 0)),
        ValueError,
        rf"{WIDTHS}; got \(8, 0\)",
    ),
    (
        "AmortizedCategorical with no categories",
        lambda: AmortizedCategorical(D, 0),
        ValueError,
        "num_categories must be an integer >= 1; got 0",
    ),
    (
        "AmortizedCategorical with a float data_dim",
        lambda: AmortizedCategorical(4.0, 3),
        ValueError,
        "data_dim must be an integer >= 1; got 4.0",
    ),
    (
        "MeanField with no data points",
        lambda: MeanField(0, K),
        ValueError,
        "num_data must be an integer >= 1; got 0",
    ),
    (
        "MeanField with a bool latent_dim",
        lambda: MeanField(6, True),
        ValueError,
        "latent_dim must be an integer >= 1; got True",
    ),
    (
        "PriorGuide of something that is not a model",
        lambda: PriorGuide(3),
        TypeError,
        "model must be a callable Pyro model; got int",
    ),
    (
        "GaussianVAE with a zero hidden width",
        lambda: GaussianVAE(D, K, hidden=(0,)),
        ValueError,
        rf"{WIDTHS}; got \(0,\)",
    ),
    (
        "GaussianVAE with a negative hidden width",
        lambda: GaussianVAE(D, K, hidden=(-3,)),
        ValueError,
        rf"{WIDTHS}; got \(-3,\)",
    ),
    (
        "GaussianVAE with a width that is not a sequence",
        lambda: GaussianVAE(D, K, hidden=64),
        TypeError,
        rf"{WIDTHS}, e.g. \(64, 64\); got 64",
    ),
    (
        "GaussianVAE with a string data_dim",
        lambda: GaussianVAE("4", K, covariance="full"),
        ValueError,
        "data_dim must be an integer >= 1; got '4'",
    ),
    (
        "GaussianVAE with cholesky_from_z not a bool",
        lambda: GaussianVAE(D, K, covariance="full", cholesky_from_z="yes"),
        TypeError,
        "cholesky_from_z must be True or False; got 'yes'",
    ),
    (
        "BernoulliVAE with latent_dim 0",
        lambda: BernoulliVAE(D, 0),
        ValueError,
        "latent_dim must be an integer >= 1; got 0",
    ),
    (
        "BernoulliVAE with a float hidden width",
        lambda: BernoulliVAE(D, K, hidden=(8.5,)),
        ValueError,
        rf"{WIDTHS}; got \(8.5,\)",
    ),
    (
        "AutoregressiveVAE with a zero hidden width",
        lambda: AutoregressiveVAE(D, K, hidden=(0,)),
        ValueError,
        r"hidden must be one or more positive widths \(integers\); got \(0,\)",
    ),
    (
        "AutoregressiveVAE with a negative data_dim",
        lambda: AutoregressiveVAE(-1, K),
        ValueError,
        "data_dim must be an integer >= 1; got -1",
    ),
    (
        "LinearGaussian with data_dim 0",
        lambda: LinearGaussian(0, K),
        ValueError,
        "data_dim must be an integer >= 1; got 0",
    ),
    (
        "LinearGaussian with an infinite fixed noise",
        lambda: LinearGaussian(D, K, fixed_noise=float("inf")),
        ValueError,
        "fixed_noise must be a positive finite float or None; got inf",
    ),
    (
        "GaussianMixture with no components",
        lambda: GaussianMixture(D, 0),
        ValueError,
        "num_components must be an integer >= 1; got 0",
    ),
    (
        "rate_distortion given a model instead of a factory",
        lambda: rate_distortion(GaussianVAE(D, K), never_called, X, betas=(1.0,), steps=1),
        TypeError,
        r"make_model must be a callable that builds a fresh model, e.g. lambda: "
        r"GaussianVAE\(2, 2\); got a GaussianVAE instance",
    ),
    (
        "rate_distortion given a guide instead of a factory",
        lambda: rate_distortion(never_called, AmortizedGaussian(D, K), X, betas=(1.0,), steps=1),
        TypeError,
        r"make_guide must be a callable that builds a fresh guide from the model, e.g. "
        r"lambda model: AmortizedGaussian\(2, 2\); got an AmortizedGaussian instance",
    ),
    (
        "rate_distortion given a number as make_model",
        lambda: rate_distortion(3, never_called, X, betas=(1.0,), steps=1),
        TypeError,
        "make_model must be a callable that builds a fresh model.*; got int",
    ),
    (
        "rate_distortion with eval_points -1",
        lambda: sweep(eval_points=-1),
        ValueError,
        r"eval_points must be None or an integer in \[1, N=6\]; got -1",
    ),
    (
        "rate_distortion with eval_points 0",
        lambda: sweep(eval_points=0),
        ValueError,
        r"eval_points must be None or an integer in \[1, N=6\]; got 0",
    ),
    (
        "rate_distortion with eval_points N + 1",
        lambda: sweep(eval_points=7),
        ValueError,
        r"eval_points must be None or an integer in \[1, N=6\]; got 7",
    ),
    (
        "rate_distortion with a float eval_points",
        lambda: sweep(eval_points=2.5),
        ValueError,
        r"eval_points must be None or an integer in \[1, N=6\]; got 2.5",
    ),
    (
        "rate_distortion with an infinite beta",
        lambda: sweep(betas=(1.0, float("inf"))),
        ValueError,
        r"betas must be a non-empty sequence of finite numbers > 0; got \(1.0, inf\)",
    ),
    (
        "rate_distortion with a bool beta",
        lambda: sweep(betas=(True,)),
        ValueError,
        r"betas must be a non-empty sequence of finite numbers > 0; got \(True,\)",
    ),
    (
        "rate_distortion with a single number as betas",
        lambda: sweep(betas=1.0),
        TypeError,
        r"betas must be a sequence of numbers > 0, e.g. \(0.5, 1.0, 2.0\); got 1.0",
    ),
    (
        "rate_distortion with a seed beyond torch's range",
        lambda: sweep(seed=2**64),
        ValueError,
        r"seed must be None or an integer in \[0, 2\*\*63 - 1\]",
    ),
    (
        "rate_distortion with steps 0",
        lambda: sweep(steps=0),
        ValueError,
        "steps must be an integer >= 1; got 0",
    ),
    (
        "linear_beta_optimum with more latents than columns",
        lambda: linear_beta_optimum(X, D + 1, 0.5, 1.0),
        ValueError,
        r"latent_dim must be an integer in \[1, D=4\]; got 5",
    ),
    (
        "linear_beta_optimum with a zero noise scale",
        lambda: linear_beta_optimum(X, K, 0.0, 1.0),
        ValueError,
        "noise_scale must be a finite number > 0; got 0.0",
    ),
    (
        "linear_beta_optimum with a negative beta",
        lambda: linear_beta_optimum(X, K, 0.5, -1.0),
        ValueError,
        "beta must be a finite number > 0; got -1.0",
    ),
    (
        "aggressive training that is not a bool or settings",
        lambda: fit(GaussianVAE(D, K), AmortizedGaussian(D, K), X, steps=1, aggressive="yes"),
        TypeError,
        "aggressive must be a bool or an AggressiveTraining; got str",
    ),
    (
        "aggressive training with no inner steps",
        lambda: AggressiveTraining(max_inner_steps=0),
        ValueError,
        "max_inner_steps must be an integer >= 1; got 0",
    ),
    (
        "the DReG gradient of the ELBO",
        lambda: fit(GaussianVAE(D, K), AmortizedGaussian(D, K), X, steps=1, gradient="dreg"),
        ValueError,
        "gradient='dreg' estimates the gradient of the importance-weighted bound: it needs "
        "objective='iwae'; got objective='elbo'",
    ),
    (
        "the DReG gradient under a KL weight other than 1",
        lambda: fit(
            GaussianVAE(D, K),
            AmortizedGaussian(D, K),
            X,
            steps=1,
            objective="iwae",
            gradient="dreg",
            beta=0.5,
        ),  # fmt: skip
        ValueError,
        "gradient='dreg' is the doubly reparameterised gradient of the IWAE bound at a KL weight",
    ),
    (
        "an unknown IWAE gradient",
        lambda: IWAE(num_particles=2, gradient="fast"),
        ValueError,
        r"gradient must be one of \('plain', 'dreg'\); got 'fast'",
    ),
    (
        "a cyclical schedule rising over more than its cycle",
        lambda: CyclicalAnnealing(ratio=1.5),
        ValueError,
        r"ratio must be in \(0, 1\]; got 1.5",
    ),
    (
        "a cyclical schedule of no cycles",
        lambda: CyclicalAnnealing(cycles=0),
        ValueError,
        "cycles must be an integer >= 1; got 0",
    ),
    (
        "a committed rate of zero",
        lambda: CommittedRateGaussian(D, K, delta=0.0),
        ValueError,
        "delta must be",
    ),
    (
        "a batch-norm scale of zero",
        lambda: BatchNormGaussian(D, K, gamma=0.0),
        ValueError,
        "gamma must be a positive number; got 0.0",
    ),
    (
        "a batch-normalised encoder in training mode on one row",
        lambda: BatchNormGaussian(D, K)(X[:1]),
        ValueError,
        "BatchNormGaussian normalises over the batch in training mode: x must have at least 2",
    ),
    (
        "a rate floor against a prior that is not N(0, I)",
        lambda: check_standard_normal_prior(shifted_prior, X),
        NonStandardPriorError,
        r"a rate floor needs the prior of site 'z' to be N\(0, I\); got a Normal with loc in "
        r"\[1, 1\]",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [row[1:] for row in BAD_INPUTS],
    ids=[row[0] for row in BAD_INPUTS],
)
def test_bad_input_more_gets_an_error_naming_the_problem(call, error, message):
    check_row(call, error, message)


def test_numpy_integer_sizes_are_accepted():
    guide = AmortizedGaussian(np.int64(4), np.int32(2), hidden=np.array([8, 8]))
    model = GaussianVAE(np.int64(4), np.int64(2), hidden=[np.int16(8)])
    assert (guide.data_dim, guide.latent_dim, guide.encoder[0].out_features) == (4, 2, 8)
    assert type(model.data_dim) is int and model.hidden == (8,)
    assert MeanField(np.int64(6), 2).loc.shape == (6, 2)


def test_a_linear_encoder_has_no_hidden_layers():
    assert len(AmortizedGaussian(D, K, hidden=()).encoder) == 1


def _cli_error(argv: list[str], capsys) -> str:
    """Run ``lvm argv``, which must fail with exit code 2 and compute nothing; its stderr."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.out == "", "computed before refusing its arguments"
    return captured.err


def test_cli_refuses_json_into_a_directory_before_computing(tmp_path, capsys):
    error = _cli_error(["exact", "--json", str(tmp_path)], capsys)
    assert f"lvm exact: error: --json {str(tmp_path)!r} is a directory; give a file path" in error


def test_cli_refuses_json_under_a_file_before_computing(tmp_path, capsys):
    parent = tmp_path / "a-file"
    parent.write_text("")
    error = _cli_error(["list", "--json", str(parent / "out.json")], capsys)
    assert f"lvm list: error: --json {str(parent / 'out.json')!r}: " in error
    assert f"{str(parent)!r} is a file, not a folder" in error


def test_cli_refuses_json_in_an_unwritable_folder(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: let the check see the folder as others do
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: path != folder and access(path, mode))
    try:
        error = _cli_error(["exact", "--json", str(folder / "out.json")], capsys)
    finally:
        folder.chmod(0o700)
    assert (
        f"--json {str(folder / 'out.json')!r}: the folder {str(folder)!r} is not writable" in error
    )


@pytest.mark.parametrize("command", ["collapse", "frontier", "sandwich"])
def test_cli_refuses_an_out_folder_that_is_a_file_before_computing(command, tmp_path, capsys):
    out = tmp_path / "a-file"
    out.write_text("")
    error = _cli_error(
        [command, "--quick" if command != "sandwich" else "--quiet", "--out", str(out)], capsys
    )
    assert f"lvm {command}: error: --out {str(out)!r} is a file, not a folder" in error


def test_cli_creates_a_missing_json_folder(tmp_path, capsys):
    target = tmp_path / "new" / "folder" / "list.json"
    assert main(["list", "--json", str(target)]) == 0
    assert "models" in target.read_text()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a full disk)")
def test_cli_reports_a_failed_json_write_in_one_line(capsys):
    assert main(["list", "--json", "/dev/full"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.splitlines() == [
        "lvm list: error: --json '/dev/full': could not write it: No space left on device"
    ]


@pytest.mark.parametrize("command", ["exact", "fit", "compare", "collapse", "frontier", "sandwich"])
@pytest.mark.parametrize("seed", [str(2**64), str(2**63), "-1"])
def test_cli_seeds_outside_torchs_range_are_refused_by_argparse(command, seed, capsys):
    error = _cli_error([command, "--seed", seed], capsys)
    assert f"lvm {command}: error: argument --seed: " in error
    assert f"must be an integer in [0, 2**63 - 1]; got {seed}" in error


def test_cli_accepts_the_largest_seed(capsys):
    assert main(["exact", "--seed", str(2**63 - 1)]) == 0
