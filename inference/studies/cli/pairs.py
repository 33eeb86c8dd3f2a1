"""The commands on one model/guide pair: ``exact``, ``fit`` (with its checkpoints and
``--resume``), ``compare`` and ``diagnose`` of a saved run, and ``sandwich``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from inference.studies.cli.tables import _print_pairs

if TYPE_CHECKING:  # the heavy modules load inside the commands that need them
    from inference.studies.runs import RunSpec
    from inference.training.train import FitResult
    from lvm_models._base import LatentVariableModel
    from lvm_models.datasets import Dataset


def _exact(args: argparse.Namespace) -> dict:
    """Closed-form maximum-likelihood pPCA and the Gaussian references, no training."""
    from inference.estimators.exact import exact_log_marginal
    from inference.studies.runs import load_data
    from lvm_models import datasets, ppca_max_likelihood

    data, _ = load_data(args.data, seed=args.seed, key=args.data_key)
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
    "data_key",
    "test_fraction",
    "model",
    "guide",
    "latent_dim",
    "seed",
    "steps",
    "batch_size",
    "lr",
    "objective",
)
# Run options added after checkpoints first stored them: an older checkpoint has these values.
_LATER_RUN_OPTIONS = {"data_key": None, "test_fraction": 0.0}
_DEFAULT_STEPS = 2000


def _fit(args: argparse.Namespace) -> dict:
    """Train a named model/guide pair on a data set or file, evaluate it (on the held-out rows
    where there are some), and save the run with --save."""
    from inference._validate import check_output_path
    from inference.studies.runs import RunSpec, save_run
    from lvm_models import datasets

    if args.save is not None:
        check_output_path("--save", args.save)
    if args.resume is not None:
        _take_run_options_from(args.resume, args)
    args.steps = _DEFAULT_STEPS if args.steps is None else args.steps
    data, held_out, model, guide = _built_pair(args)
    if args.eval_data is not None:
        evaluation = _checked_for(model, datasets.from_file(args.eval_data, key=args.eval_key))
    else:
        evaluation = data if held_out is None else held_out
    saved_to = args.checkpoint or args.resume
    label = f"{args.model} with {args.guide} on {data.name}"
    progress = False if args.quiet else label
    result = _train(args, data, model, guide, progress=progress, checkpoint=saved_to)
    report = {"final_loss": result.final_loss, "history": result.history.to_dict()}
    report |= _evaluate(args, args, evaluation, model, guide)
    trained = (
        f"trained {args.model} with {args.guide} ({args.latent_dim}-D latent) on "
        f"{data.description}: {args.steps} steps, final loss {result.final_loss:.4f} nats per point"
    )
    if args.save is None:
        print(f"{trained}; not saved (--save PATH keeps it for `lvm compare --from PATH`)")
        return report
    options = {name: getattr(args, name) for name in ("steps", "batch_size", "lr", "objective")}
    spec = RunSpec.of(
        args.model,
        args.guide,
        args.latent_dim,
        data,
        seed=args.seed,
        data_key=args.data_key,
        test_fraction=args.test_fraction,
        options=options,
    )
    save_run(args.save, model, guide, spec)
    print(f"{trained}; run saved to {str(args.save)!r}")
    return report | {"saved_run": str(args.save)}


def _compare(args: argparse.Namespace) -> dict:
    """Evaluate a saved run (`lvm fit --save`, or a checkpoint of `lvm fit --checkpoint`) on
    its held-out rows, its training data or --eval-data: no training."""
    model, guide, spec, evaluation = _saved_pair(args)
    return _evaluate(spec, args, evaluation, model, guide)


def _diagnose(args: argparse.Namespace) -> dict:
    """Rate, distortion, active units and I(x; z) of a saved run's pair: no training."""
    model, guide, spec, evaluation = _saved_pair(args)
    return _evaluate(spec, args, evaluation, model, guide, bounds=False)


def _saved_pair(args: argparse.Namespace) -> tuple:
    """A saved run's model, guide and spec, and the data to evaluate it on: --eval-data, else
    the run's held-out rows, else its training data. --seed defaults to the run's seed."""
    from inference.studies.runs import load_run, run_data
    from lvm_models import datasets

    model, guide, spec = load_run(args.source)
    args.seed = spec.seed if args.seed is None else args.seed
    if args.eval_data is not None:
        evaluation = datasets.from_file(args.eval_data, key=args.eval_key)
    else:
        data, held_out = run_data(spec)
        evaluation = data if held_out is None else held_out
    steps = spec.options.get("steps", "?")
    print(f"evaluating {spec.model} with {spec.guide} from {str(args.source)!r} (step {steps})")
    return model, guide, spec, _checked_for(model, evaluation)


def _checked_for(model: LatentVariableModel, data: Dataset) -> Dataset:
    """``data``, once ``model`` accepts it (its checks: D columns, binary data for Bernoulli
    decoders); a ValueError naming the data otherwise."""
    try:
        model.checked_data(data.x)
    except ValueError as error:
        raise ValueError(f"data {data.name!r}: {error}") from None
    return data


def _train(
    run: argparse.Namespace,
    data: Dataset,
    model: Callable,
    guide: Callable,
    *,
    progress: bool | str,
    checkpoint: Path | None,
) -> FitResult:
    """``fit`` with a run's options; a run resumed at its last step trains nothing."""
    from inference.training.train import fit

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


def _evaluate(
    run: argparse.Namespace | RunSpec,
    args: argparse.Namespace,
    data: Dataset,
    model: Callable,
    guide: Callable,
    *,
    bounds: bool = True,
) -> dict:
    """Diagnosis and (with ``bounds``) the ELBO / IW_K / reference table, on the first
    ``--eval-points`` rows of ``data``; ``run`` names the pair (``.model``, ``.guide``,
    ``.data``: the run's options or its :class:`~inference.studies.runs.RunSpec`)."""
    from inference.estimators.compare import compare
    from inference.estimators.diagnostics import diagnose

    evaluation = data.x[: args.eval_points]
    reference = None if args.reference == "none" else args.reference
    print(f"evaluated on {data.description}: the first {evaluation.shape[0]} rows")
    # The reference goes to the table where there is one, else to the diagnosis (its gap).
    diagnosis = diagnose(
        model, guide, evaluation, seed=args.seed, reference=None if bounds else reference
    )
    report = {
        "data": run.data,
        "evaluated_on": data.description,
        "model": run.model,
        "guide": run.guide,
        "diagnosis": diagnosis.to_dict(),
    }
    if bounds:
        table = compare(
            model,
            guide,
            evaluation,
            num_samples=args.num_samples,
            seed=args.seed,
            reference=reference,
        )
        print(table)
        report["comparison"] = table.to_dict()
    _print_pairs({k: v for k, v in diagnosis.to_dict().items() if v is not None})
    return report


def _take_run_options_from(path: Path, args: argparse.Namespace) -> None:
    """Set the run's options from a checkpoint; an explicit --steps extends the run, any
    other flag given explicitly must agree with the checkpoint."""
    from inference.training.checkpoint import CheckpointError

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
    from inference.training.checkpoint import CheckpointError, load_checkpoint

    stored = _LATER_RUN_OPTIONS | load_checkpoint(path).info
    missing = [name for name in _RUN_OPTIONS if name not in stored]
    if missing:
        raise CheckpointError(f"{str(path)!r} was not written by `lvm fit` (no {missing} in it)")
    return {name: stored[name] for name in _RUN_OPTIONS}


def _explicit_options(argv: list[str]) -> set[str]:
    """The run options given on the command line (``--lr 0.5`` or ``--lr=0.5``), by dest."""
    flags = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
    return {name for name in _RUN_OPTIONS if "--" + name.replace("_", "-") in flags}


def _built_pair(args: argparse.Namespace) -> tuple:
    """The run's training data and held-out rows (None without --test-fraction), and a fresh
    model and guide of the named kinds for it."""
    from inference.studies.registry import GUIDES, MODELS, lookup
    from inference.studies.runs import load_data

    data, held_out = load_data(
        args.data, seed=args.seed, key=args.data_key, test_fraction=args.test_fraction
    )
    model = lookup("model", MODELS, args.model).build(data.x.shape[1], args.latent_dim)
    guide = lookup("guide", GUIDES, args.guide).build(model, data.x.shape[0])
    return _checked_for(model, data), held_out, model, guide


# What a saved run fixes, so that `lvm sandwich --from` refuses them.
_PAIR_OPTIONS = ("data", "data_key", "model", "guide", "latent_dim", "steps", "batch_size", "lr")


def _sandwich(args: argparse.Namespace) -> dict:
    """BDMC at several T on data simulated from a pair: a built-in pair trained briefly here,
    or a saved run's (--from, no training)."""
    import torch

    from inference.studies import plots
    from inference.studies.runs import load_run
    from inference.studies.sandwich import sandwich_curve
    from inference.training.train import fit

    if args.source is None:
        data, _, model, guide = _built_pair(args)
        run = argparse.Namespace(model=args.model, guide=args.guide, data=data.name)
        latent_dim, x = args.latent_dim, data.x
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
    else:
        fixed = [name for name in _PAIR_OPTIONS if name in args.explicit]
        if fixed:
            flags = ", ".join("--" + name.replace("_", "-") for name in fixed)
            raise ValueError(f"--from takes the pair and its data from the run; drop {flags}")
        model, guide, run = load_run(args.source)
        args.seed = args.seed if "seed" in args.explicit else run.seed
        # BDMC simulates its data from the model: x gives only the shape.
        latent_dim, x = run.latent_dim, torch.zeros(args.eval_points, run.data_shape[1])
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
    label = f"{run.model} on {run.data}, {latent_dim}-D latent, from {start_name}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sandwich.json").write_text(curve.to_json())
    figure = plots.plot_sandwich(curve, args.out / "sandwich.png", label)
    print(f"wrote {args.out / 'sandwich.json'} and {figure}")
    return {"data": run.data, "model": run.model, "guide": run.guide, **curve.to_dict()}
