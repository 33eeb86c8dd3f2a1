"""The ``lvm`` command line: calls the library the way a user would."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from inference._validate import MAX_SEED, check_output_path
from inference.estimators.compare import compare
from inference.estimators.diagnostics import diagnose
from inference.estimators.exact import exact_log_marginal
from inference.studies import plots
from inference.studies.experiments import DEFAULT_BUDGET, EXPERIMENTS, QUICK_BUDGET
from inference.studies.frontier import built_in_sweeps
from inference.studies.registry import GUIDES, MODELS, lookup
from inference.studies.remedies import format_remedies, price_remedies
from inference.studies.sandwich import sandwich_curve
from inference.training.checkpoint import CheckpointError, check_checkpoint_path, load_checkpoint
from inference.training.train import fit
from lvm_models import datasets, ppca_max_likelihood
from lvm_models._base import seed_32


def _exact(args: argparse.Namespace) -> dict:
    """Closed-form maximum-likelihood pPCA and the Gaussian references, no training."""
    data = datasets.load(args.data, seed=args.seed)
    x = data.x.double()
    model = ppca_max_likelihood(x, args.latent_dim)
    report = {
        "data": data.name,
        "num_data": x.shape[0],
        "data_dim": x.shape[1],
        "ppca_latent_dim": args.latent_dim,
        "ppca_exact_log_px": exact_log_marginal(model, x).mean().item(),
        "gaussian_full_ml_log_px": datasets.gaussian_max_log_likelihood(x, "full").mean().item(),
        "gaussian_diagonal_ml_log_px": datasets.gaussian_max_log_likelihood(x, "diagonal")
        .mean()
        .item(),
    }
    if data.log_density is not None:
        report["true_log_density"] = data.log_density(x).mean().item()
    _print_pairs(report)
    return report


# The options that define a training run: a checkpoint stores them, --resume reads them back.
_RUN_OPTIONS = (
    "data",
    "model",
    "guide",
    "latent_dim",
    "seed",
    "steps",
    "batch_size",
    "lr",
    "objective",
)
_DEFAULT_STEPS = 2000


def _fit(args: argparse.Namespace) -> dict:
    """Train a named model/guide pair on a named data set, then diagnose and compare it."""
    if args.resume is not None:
        _take_run_options_from(args.resume, args)
    args.steps = _DEFAULT_STEPS if args.steps is None else args.steps
    data, model, guide = _built_pair(args)
    saved_to = args.checkpoint or args.resume
    result = _train(args, data, model, guide, progress=not args.quiet, checkpoint=saved_to)
    report = {"final_loss": result.final_loss, "history": result.history.to_dict()}
    return report | _evaluate(args, args, data, model, guide)


def _compare(args: argparse.Namespace) -> dict:
    """Evaluate the pair a run of `lvm fit --checkpoint` saved, on its data: no training."""
    run = argparse.Namespace(**_run_options_in(args.source), resume=args.source)
    run.steps = load_checkpoint(args.source).step  # all the run's steps: none left to train
    args.seed = run.seed if args.seed is None else args.seed
    data, model, guide = _built_pair(run)
    _train(run, data, model, guide, progress=False, checkpoint=None)  # restores parameters
    print(f"evaluating {run.model} with {run.guide} from {str(args.source)!r} (step {run.steps})")
    return _evaluate(run, args, data, model, guide)


def _train(run: argparse.Namespace, data, model, guide, *, progress: bool, checkpoint: Path | None):
    """``fit`` with a run's options; a run resumed at its last step trains nothing."""
    x = data.x
    return fit(
        model,
        guide,
        x,
        objective=run.objective,
        steps=run.steps,
        batch_size=min(run.batch_size, x.shape[0]),
        lr=run.lr,
        seed=run.seed,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=getattr(run, "checkpoint_every", 0),
        resume=run.resume,
        checkpoint_info={name: getattr(run, name) for name in _RUN_OPTIONS},
    )


def _evaluate(run: argparse.Namespace, args: argparse.Namespace, data, model, guide) -> dict:
    """Diagnosis and the ELBO / IW_K / reference table on the first ``--eval-points`` rows."""
    evaluation = data.x[: args.eval_points]
    diagnosis = diagnose(model, guide, evaluation, seed=args.seed)
    table = compare(
        model,
        guide,
        evaluation,
        num_samples=args.num_samples,
        seed=args.seed,
        reference=None if args.reference == "none" else args.reference,
    )
    print(table)
    _print_pairs({k: v for k, v in diagnosis.to_dict().items() if v is not None})
    return {
        "data": data.name,
        "model": run.model,
        "guide": run.guide,
        "diagnosis": diagnosis.to_dict(),
        "comparison": table.to_dict(),
    }


REMEDIES_TITLE = "Remedies for collapse on the powerful cases: rate gained, log p(x) lost"


def _collapse(args: argparse.Namespace) -> dict:
    """All four experiments: summary table, results.json and plots in ``args.out``."""
    budget = QUICK_BUDGET if args.quick else DEFAULT_BUDGET
    results = []
    for experiment in EXPERIMENTS:
        print(f"[lvm collapse] {experiment.__doc__.split(':')[0].strip()}", file=sys.stderr)
        results += experiment(budget, args.seed, not args.quiet)
    print(f"[lvm collapse] {REMEDIES_TITLE}", file=sys.stderr)
    remedies = price_remedies(results, budget, args.seed, not args.quiet)
    print(format_summary(results))
    for result in results:
        print(f"{result.key:<3} {result.finding()}")
    print(f"\n{GAPS_TITLE}:\n{format_gaps(results)}")
    print(f"\n{REMEDIES_TITLE}:\n{format_remedies(remedies)}")
    report = {
        "budget": asdict(budget),
        "seed": args.seed,
        "experiments": [result.to_dict() for result in results],
        "remedies": [remedy.to_dict() for remedy in remedies],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    figures = [
        plots.plot_training_curves(results, args.out / "training_curves.png"),
        plots.plot_rates(results, args.out / "rates.png"),
        plots.plot_iw_against_k(results, args.out / "iw_against_k.png"),
    ]
    print(f"wrote {args.out / 'results.json'} and {', '.join(str(f) for f in figures)}")
    return report


def _frontier(args: argparse.Namespace) -> dict:
    """Beta sweeps on built-in pairs: table, JSON and the two plots in ``args.out``."""
    tables = built_in_sweeps(quick=args.quick, seed=args.seed, progress=not args.quiet)
    for name, table in tables.items():
        print(f"{name}\n{table}\n")
    report = {"seed": args.seed, "sweeps": {name: t.to_dict() for name, t in tables.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frontier.json").write_text(json.dumps(report, indent=2))
    figures = [
        plots.plot_rate_distortion(tables, args.out / "rate_distortion.png"),
        plots.plot_log_px_against_rate(tables, args.out / "log_px_against_rate.png"),
    ]
    print(f"wrote {args.out / 'frontier.json'} and {', '.join(str(f) for f in figures)}")
    return report


def _built_pair(args: argparse.Namespace) -> tuple[datasets.Dataset, object, object]:
    """The named data set, and a fresh model and guide of the named kinds for it."""
    data = datasets.load(args.data, seed=args.seed)
    model = lookup("model", MODELS, args.model).build(data.x.shape[1], args.latent_dim)
    guide = lookup("guide", GUIDES, args.guide).build(model, data.x.shape[0])
    return data, model, guide


def _sandwich(args: argparse.Namespace) -> dict:
    """Train a built-in pair briefly, then BDMC on data simulated from it at several T."""
    data, model, guide = _built_pair(args)
    x = data.x
    if args.steps > 0:
        fit(
            model,
            guide,
            x,
            steps=args.steps,
            batch_size=min(args.batch_size, x.shape[0]),
            lr=args.lr,
            seed=args.seed,
            progress=not args.quiet,
        )
    start = None if args.from_prior else guide
    curve = sandwich_curve(
        model,
        start,
        x[: args.eval_points],
        steps=args.ais_steps,
        num_chains=args.chains,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(curve)
    start_name = "the prior" if args.from_prior else "the trained guide"
    label = f"{args.model} on {data.name}, {args.latent_dim}-D latent, from {start_name}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sandwich.json").write_text(curve.to_json())
    figure = plots.plot_sandwich(curve, args.out / "sandwich.png", label)
    print(f"wrote {args.out / 'sandwich.json'} and {figure}")
    return {"data": data.name, "model": args.model, "guide": args.guide, **curve.to_dict()}


def format_summary(results: list) -> str:
    """One row per experiment, in nats per data point."""
    header = (
        "exp",
        "data",
        "decoder",
        "powerful",
        "ELBO",
        "IW_K",
        "K",
        "exact",
        "rate",
        "active",
        "latent ignored",
    )
    rows = [header]
    for result in results:
        rows.append(
            (
                result.key,
                result.data,
                result.decoder,
                "yes" if result.powerful else "no",
                f"{result.elbo:.3f}",
                f"{result.iw.mean:.3f}",
                str(result.largest_k),
                "-" if result.exact is None else f"{result.exact:.3f}",
                f"{result.diagnosis.rate:.3f}",
                str(result.diagnosis.active_units),
                "yes" if result.diagnosis.latent_ignored else "no",
            )
        )
    return _aligned(rows, "(nats per data point; IW_K and exact on the evaluation points)")


GAPS_TITLE = "Where the ELBO's gap goes: approximation (the family) and amortisation (the encoder)"


def format_gaps(results: list) -> str:
    """Per experiment: log p(x) - ELBO split into the approximation gap (the best diagonal
    Gaussian per point against log p(x)) and the amortisation gap (the encoder against it)."""
    header = ("exp", "reference", "inference gap", "approximation", "amortisation", "(se)")
    rows = [header]
    for result in results:
        gaps = result.gaps
        rows.append(
            (
                result.key,
                gaps.reference,
                f"{gaps.inference_gap.mean:.3f}",
                f"{gaps.approximation_gap.mean:.3f}",
                f"{gaps.amortization_gap.mean:.3f}",
                f"{max(gaps.approximation_gap.stderr, gaps.amortization_gap.stderr):.3f}",
            )
        )
    return _aligned(rows, "(nats per data point, ELBO gaps on the evaluation points)")


def _aligned(rows: list[tuple[str, ...]], footer: str) -> str:
    """Rows as left-aligned columns, a rule under the header, and a footer line."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n" + footer


def _take_run_options_from(path: Path, args: argparse.Namespace) -> None:
    """Set the run's options from a checkpoint; an explicit --steps extends the run, any
    other flag given explicitly must agree with the checkpoint."""
    stored = _run_options_in(path)
    for name in _RUN_OPTIONS:
        if name == "steps":
            args.steps = stored["steps"] if args.steps is None else args.steps
            continue
        if name in args.explicit and getattr(args, name) != stored[name]:
            flag = "--" + name.replace("_", "-")
            raise CheckpointError(
                f"{flag} {getattr(args, name)} differs from the checkpoint's {stored[name]!r}: "
                "a resumed run keeps the options it started with (drop the flag, or start a "
                "new run)"
            )
        setattr(args, name, stored[name])


def _run_options_in(path: Path) -> dict:
    """The options of the `lvm fit` run a checkpoint holds (data, model, guide, ...)."""
    stored = load_checkpoint(path).info
    missing = [name for name in _RUN_OPTIONS if name not in stored]
    if missing:
        raise CheckpointError(f"{str(path)!r} was not written by `lvm fit` (no {missing} in it)")
    return {name: stored[name] for name in _RUN_OPTIONS}


def _explicit_options(argv: list[str]) -> set[str]:
    """The run options given on the command line (``--lr 0.5`` or ``--lr=0.5``), by dest."""
    flags = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
    return {name for name in _RUN_OPTIONS if "--" + name.replace("_", "-") in flags}


def _list(args: argparse.Namespace) -> dict:
    sections = {
        "data sets": {
            name: loader(seed=0).description for name, loader in datasets.DATASETS.items()
        },
        "models": {name: entry.description for name, entry in MODELS.items()},
        "guides": {name: entry.description for name, entry in GUIDES.items()},
    }
    for title, rows in sections.items():
        print(f"{title}:")
        for name, description in rows.items():
            print(f"  {name:<24}{description}")
    return sections


def _print_pairs(pairs: dict) -> None:
    width = max(map(len, pairs))
    for key, value in pairs.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")


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
    expected = "must be an integer in [0, 2**63 - 1]"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{expected}; got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{expected}; got {value}")
    return value


def _add_data_options(parser: argparse.ArgumentParser, default_data: str) -> None:
    parser.add_argument("--data", default=default_data, help="a data set (see `lvm list`)")
    parser.add_argument(
        "--latent-dim", type=_integer_at_least(1), default=2, help="k (components for mixtures)"
    )
    parser.add_argument("--seed", type=_seed, default=0, help="seeds data, training and estimates")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")


def _add_evaluation_options(command: argparse.ArgumentParser) -> None:
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
    command.add_argument(
        "--reference",
        choices=["none", "nuts", "ais"],
        default="none",
        help="add a reference log p(x) row: ais (annealed importance sampling from the "
        "guide, any latent dimension) or nuts (NumPyro NUTS-based); default none",
    )
    command.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvm", description="Latent variable models in Pyro: exact log p(x) and its bounds."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    exact = commands.add_parser(
        "exact", help="closed-form maximum-likelihood pPCA: exact average log p(x), in nats"
    )
    _add_data_options(exact, "correlated-gaussian")
    exact.set_defaults(run=_exact)
    fit_command = commands.add_parser(
        "fit", help="train a model/guide pair with SVI, then diagnose and compare the bounds"
    )
    _add_data_options(fit_command, "correlated-gaussian")
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
    fit_command.add_argument("--lr", type=float, default=1e-2)
    fit_command.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
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
    _add_evaluation_options(fit_command)
    fit_command.set_defaults(run=_fit)
    compare_command = commands.add_parser(
        "compare",
        help="ELBO, IW_K and a reference log p(x) of a pair saved by `lvm fit --checkpoint` "
        "(no training)",
    )
    compare_command.add_argument(
        "--from",
        dest="source",
        type=Path,
        required=True,
        help="a checkpoint written by `lvm fit --checkpoint`: its model, guide, data, parameters",
    )
    compare_command.add_argument(
        "--seed", type=_seed, default=None, help="seeds the estimates (default: the run's seed)"
    )
    compare_command.add_argument("--json", type=Path, help="also write the results as JSON here")
    _add_evaluation_options(compare_command)
    compare_command.set_defaults(run=_compare)
    for name, help_text, quick_help, run in (
        (
            "collapse",
            "the essay's experiments: when does a VAE ignore its latent? (table, JSON, plots)",
            "a smaller run (under a minute)",
            _collapse,
        ),
        (
            "frontier",
            "beta sweeps: the rate-distortion plane and log p(x) against the rate (JSON, plots)",
            "three betas, short training",
            _frontier,
        ),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--quick", action="store_true", help=quick_help)
        command.add_argument("--out", type=Path, default=Path("results"), help="output folder")
        command.add_argument(
            "--seed", type=_seed, default=0, help="seeds data, training, estimates"
        )
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        command.add_argument("--json", type=Path, help="also write the results as JSON here")
        command.set_defaults(run=run)
    sandwich = commands.add_parser(
        "sandwich",
        help="BDMC: lower and upper AIS estimates of log p(x) against the annealing steps "
        "(table, JSON, plot)",
    )
    _add_data_options(sandwich, "binarized-digits")
    sandwich.set_defaults(model="bernoulli-vae", latent_dim=16)
    sandwich.add_argument("--model", help="a model (see `lvm list`; default bernoulli-vae)")
    sandwich.add_argument("--guide", default="amortized-gaussian", help="a guide")
    sandwich.add_argument(
        "--steps", type=_integer_at_least(0), default=500, help="SVI steps first (default 500)"
    )
    sandwich.add_argument("--batch-size", type=_integer_at_least(1), default=256)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.explicit = _explicit_options(sys.argv[1:] if argv is None else argv)
    try:
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


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, the output paths that could not be written at the end."""
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


if __name__ == "__main__":
    sys.exit(main())
