"""The argument types and option groups the ``lvm`` commands share, and the help formatter."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path


def _integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, or a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}; got {value}")
        return value

    return parse


def _seed(text: str) -> int:
    """An argparse type: a seed torch takes, an integer in [0, 2**63 - 1]."""
    from inference._validate import MAX_SEED

    expected = "must be an integer in [0, 2**63 - 1]"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{expected}; got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{expected}; got {value}")
    return value


def _fraction(text: str) -> float:
    """An argparse type: a number in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1); got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1); got {value}")
    return value


def _add_data_options(
    parser: argparse.ArgumentParser, default_data: str, *, files: bool = False
) -> None:
    """--data, --latent-dim, --seed, --json; with ``files``, --data may be a file (--data-key)."""
    data_help = "a data set (see `lvm list`)"
    if files:
        data_help += (
            ", or a file of shape (N, ...): .npy, .npz (one array, or --data-key), .csv "
            "(numbers, a header allowed), .pt (a tensor)"
        )
    parser.add_argument("--data", default=default_data, help=data_help)
    if files:
        parser.add_argument("--data-key", help="the array of an .npz (or dict .pt) data file")
    parser.add_argument(
        "--latent-dim", type=_integer_at_least(1), default=2, help="k (components for mixtures)"
    )
    parser.add_argument("--seed", type=_seed, default=0, help="seeds data, training and estimates")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")


def _add_saved_run_options(command: argparse.ArgumentParser) -> None:
    """--from, --eval-data, --seed and --json of the commands that evaluate a saved run."""
    command.add_argument(
        "--from",
        dest="source",
        type=Path,
        required=True,
        help="a run saved by `lvm fit --save` (or a checkpoint of `lvm fit --checkpoint`): "
        "its model, guide, parameters and data",
    )
    command.add_argument(
        "--eval-data",
        type=Path,
        help="evaluate on this file (.npy, .npz, .csv, .pt); default: the run's held-out rows "
        "(--test-fraction), else its training data",
    )
    command.add_argument("--eval-key", help="the array of an .npz (or dict .pt) --eval-data")
    command.add_argument(
        "--seed", type=_seed, default=None, help="seeds the estimates (default: the run's seed)"
    )
    command.add_argument("--json", type=Path, help="also write the results as JSON here")


def _add_evaluation_options(command: argparse.ArgumentParser, *, bounds: bool = True) -> None:
    """--eval-points, --reference, --quiet; with ``bounds`` (the ELBO / IW_K table) also
    --num-samples."""
    if bounds:
        command.add_argument(
            "--num-samples",
            type=_integer_at_least(1),
            nargs="+",
            default=[1, 10, 100],
            help="the K values",
        )
    command.add_argument(
        "--eval-points", type=_integer_at_least(1), default=500, help="points to evaluate"
    )
    if bounds:
        command.add_argument(
            "--reference",
            choices=["none", "nuts", "ais"],
            default="none",
            help="add a reference log p(x) row: ais (annealed importance sampling from the "
            "guide, any latent dimension) or nuts (NumPyro NUTS-based); default none",
        )
    else:
        command.add_argument(
            "--reference",
            choices=["none", "ais"],
            default="none",
            help="measure the gap from ais (annealed importance sampling) where no exact "
            "log p(x) exists; default none",
        )
    command.add_argument("--quiet", action="store_true", help="no progress bar")


# Small networks gain nothing from more intra-op threads and lose to their synchronisation on a
# busy machine: a 400-step `lvm fit` on 2 shared cores took 14.7 s with torch's default and
# 8.5 s with one thread.
_DEFAULT_THREADS = 1
_THREADS_HELP = (
    "torch's intra-op threads (default: $LVM_NUM_THREADS, else 1: small networks run fastest "
    "on one; raise it for large models on an idle machine)"
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless the help says it already or the
    default says nothing (None, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        says_nothing = action.default is None or action.default is False
        if "default" in text or says_nothing or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def _version() -> str:
    """The installed package's version; in a source tree that is not installed, pyproject's."""
    from importlib import metadata

    try:
        return metadata.version("lvm-suite")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
        try:
            found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
        except OSError:
            found = None
        return found.group(1) if found else "unknown"
