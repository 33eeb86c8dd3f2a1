"""The ``lvm`` command line: calls the library the way a user would.

``options`` (argument types and option groups), ``pairs`` (exact, fit, compare, diagnose,
sandwich), ``studies`` (collapse, frontier, list), ``tables`` (what they print); ``build_parser``
and ``main`` here.

Only the standard library is imported here: torch, Pyro, JAX and matplotlib load inside the
command that needs them, so ``lvm --help`` and ``lvm --version`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inference.studies.cli.options import (
    _DEFAULT_THREADS,
    _THREADS_HELP,
    _add_data_options,
    _add_evaluation_options,
    _add_saved_run_options,
    _fraction,
    _HelpFormatter,
    _integer_at_least,
    _seed,
    _version,
)
from inference.studies.cli.pairs import (
    _DEFAULT_STEPS,
    _compare,
    _diagnose,
    _exact,
    _explicit_options,
    _fit,
    _sandwich,
)
from inference.studies.cli.studies import REMEDIES_TITLE, _collapse, _frontier, _list
from inference.studies.cli.tables import GAPS_TITLE, format_gaps, format_summary
from inference.studies.cli.tables import _print_pairs as _print_pairs

__all__ = ["GAPS_TITLE", "REMEDIES_TITLE", "build_parser", "format_gaps", "format_summary", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvm",
        description="Latent variable models in Pyro: exact log p(x) and its bounds.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--threads",
        type=_integer_at_least(1),
        default=os.environ.get("LVM_NUM_THREADS", str(_DEFAULT_THREADS)),
        help=_THREADS_HELP,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    exact = commands.add_parser(
        "exact", help="closed-form maximum-likelihood pPCA: exact average log p(x), in nats"
    )
    _add_data_options(exact, "correlated-gaussian", files=True)
    exact.set_defaults(run=_exact)
    fit_command = commands.add_parser(
        "fit", help="train a model/guide pair with SVI, then diagnose and compare the bounds"
    )
    _add_data_options(fit_command, "correlated-gaussian", files=True)
    fit_command.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.0,
        help="hold out this share of the rows (seeded by --seed) and evaluate on them "
        "(default 0: none)",
    )
    fit_command.add_argument(
        "--eval-data", type=Path, help="evaluate on this file instead (.npy, .npz, .csv, .pt)"
    )
    fit_command.add_argument("--eval-key", help="the array of an .npz (or dict .pt) --eval-data")
    fit_command.add_argument("--model", default="ppca", help="a model (see `lvm list`)")
    fit_command.add_argument("--guide", default="amortized-gaussian", help="a guide")
    fit_command.add_argument(
        "--steps",
        type=_integer_at_least(1),
        help=f"SVI steps in all (default {_DEFAULT_STEPS}); to evaluate a saved run without "
        "training, use `lvm compare --from`",
    )
    fit_command.add_argument(
        "--batch-size", type=_integer_at_least(1), default=256, help="rows per step (at most N)"
    )
    fit_command.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate")
    fit_command.add_argument(
        "--objective",
        default="elbo",
        choices=["elbo", "iwae"],
        help="the bound maximised: the ELBO, or the importance-weighted bound",
    )
    fit_command.add_argument("--checkpoint", type=Path, help="write the training state here")
    fit_command.add_argument(
        "--checkpoint-every",
        type=_integer_at_least(0),
        default=0,
        help="steps between checkpoints (0: only at the end)",
    )
    fit_command.add_argument(
        "--resume",
        type=Path,
        help="continue the run saved in this checkpoint (its model, guide, data, options)",
    )
    fit_command.add_argument(
        "--save",
        type=Path,
        help="save the trained pair and its spec here, for `lvm compare/diagnose/sandwich --from`",
    )
    _add_evaluation_options(fit_command)
    fit_command.set_defaults(run=_fit)
    for name, what, bounds, run in (
        ("compare", "ELBO, IW_K and a reference log p(x)", True, _compare),
        ("diagnose", "rate, distortion, active units and I(x; z)", False, _diagnose),
    ):
        command = commands.add_parser(
            name, help=f"{what} of a pair saved by `lvm fit --save` (no training)"
        )
        _add_saved_run_options(command)
        _add_evaluation_options(command, bounds=bounds)
        command.set_defaults(run=run)
    for name, help_text, quick_help, run in (
        (
            "collapse",
            "the essay's experiments: when does a VAE ignore its latent? (table, JSON, plots)",
            "a smoke test, under a minute: a small budget that checks the pipeline end to end; "
            "its figures need not show the essay's conclusions",
            _collapse,
        ),
        (
            "frontier",
            "beta sweeps: the rate-distortion plane and log p(x) against the rate (JSON, plots)",
            "a smoke test: three betas, short training; its figures need not show the full "
            "sweep's conclusions",
            _frontier,
        ),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--quick", action="store_true", help=quick_help)
        command.add_argument(
            "--out",
            type=Path,
            help="output folder (default: results, or results/quick with --quick, so a smoke "
            "test never overwrites a full run)",
        )
        command.add_argument(
            "--seed", type=_seed, default=0, help="seeds data, training, estimates"
        )
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        command.add_argument("--json", type=Path, help="also write the results as JSON here")
        command.add_argument(
            "--workers",
            type=_integer_at_least(1),
            default=_default_workers(),
            help="processes that train the independent runs side by side, each with --threads "
            "threads (default: the CPUs this process may use); the numbers do not depend on it",
        )
        command.set_defaults(run=run)
    sandwich = commands.add_parser(
        "sandwich",
        help="BDMC: lower and upper AIS estimates of log p(x) against the annealing steps "
        "(table, JSON, plot)",
    )
    _add_data_options(sandwich, "binarized-digits", files=True)
    sandwich.set_defaults(model="bernoulli-vae", latent_dim=16, test_fraction=0.0)
    sandwich.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="a run saved by `lvm fit --save`: BDMC on its pair, no training (--seed "
        "defaults to the run's)",
    )
    sandwich.add_argument("--model", help="a model (see `lvm list`; default bernoulli-vae)")
    sandwich.add_argument("--guide", default="amortized-gaussian", help="a guide")
    sandwich.add_argument(
        "--steps", type=_integer_at_least(0), default=500, help="SVI steps first (default 500)"
    )
    sandwich.add_argument(
        "--batch-size", type=_integer_at_least(1), default=256, help="rows per step (at most N)"
    )
    sandwich.add_argument("--lr", type=float, default=1e-2, help="SVI learning rate")
    sandwich.add_argument(
        "--ais-steps",
        type=_integer_at_least(1),
        nargs="+",
        default=[10, 100, 1000],
        help="annealing steps T, one sandwich each (default 10 100 1000)",
    )
    sandwich.add_argument(
        "--chains", type=_integer_at_least(1), default=16, help="chains per point (default 16)"
    )
    sandwich.add_argument(
        "--eval-points",
        type=_integer_at_least(1),
        default=32,
        help="data points simulated from the model (default 32)",
    )
    sandwich.add_argument(
        "--from-prior", action="store_true", help="anneal from the prior, not the trained guide"
    )
    sandwich.add_argument(
        "--out", type=Path, default=Path("results/sandwich"), help="output folder"
    )
    sandwich.add_argument("--quiet", action="store_true", help="no progress bars")
    sandwich.set_defaults(run=_sandwich)
    listing = commands.add_parser("list", help="name the built-in data sets, models and guides")
    listing.add_argument("--json", type=Path, help="also write the lists as JSON to this file")
    listing.set_defaults(run=_list)
    for command in commands.choices.values():
        command.allow_abbrev = False  # a resumed run tells explicit flags by their full names
        command.formatter_class = _HelpFormatter
        # After the command too (`lvm fit --threads 2`); given there, it wins.
        command.add_argument(
            "--threads", type=_integer_at_least(1), default=argparse.SUPPRESS, help=_THREADS_HELP
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.explicit = _explicit_options(sys.argv[1:] if argv is None else argv)
    if "quick" in args and args.out is None:
        args.out = Path("results/quick" if args.quick else "results")
    try:
        with _torch_threads(args.threads):
            import torch

            from lvm_models._base import seed_32

            _check_outputs(args)
            torch.manual_seed(seed_32(getattr(args, "seed", None) or 0))
            report = args.run(args)
        if args.json is not None:
            _write_json(args.json, report)
    except (ValueError, TypeError, OSError) as error:
        # One line: Pyro appends the trace's shapes to errors raised inside a model.
        message = (str(error).splitlines() or [type(error).__name__])[0]
        print(f"lvm {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        saved = getattr(args, "checkpoint", None) or getattr(args, "resume", None)
        kept = f"; the last checkpoint in {saved} is intact" if saved else ""
        print(f"lvm {args.command}: interrupted{kept}", file=sys.stderr)
        return 130
    return 0


def _default_workers() -> int:
    from inference.studies.pool import usable_cpus  # no torch: --help stays fast

    return usable_cpus()


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count at ``count`` for a command, and back as it was after it
    (``main`` may run in a process that goes on: a test, a notebook)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, the output paths that could not be written at the end."""
    from inference._validate import check_output_path
    from inference.training.checkpoint import check_checkpoint_path

    if args.json is not None:
        check_output_path("--json", args.json)
    if getattr(args, "out", None) is not None:
        check_output_path("--out", args.out, folder=True)
    if getattr(args, "checkpoint", None) is not None:
        check_checkpoint_path(args.checkpoint)


def _write_json(path: Path, report: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
    except OSError as error:
        # A full disk or a folder that changed during the run: one line, not a traceback.
        message = f"--json {str(path)!r}: could not write it: {error.strerror or error}"
        raise OSError(message) from error
