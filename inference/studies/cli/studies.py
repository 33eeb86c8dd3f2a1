"""The multi-run studies: ``collapse`` and ``frontier``, and ``list`` of the built-ins."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from inference.studies.cli.tables import GAPS_TITLE, format_gaps, format_summary

REMEDIES_TITLE = (
    "Remedies for collapse on the powerful cases (1b, 4b) and one that is not (1c): rate "
    "gained, log p(x) lost"
)
SMOKE_TEST = (
    "smoke test (--quick): a small budget that checks the whole pipeline runs; its figures "
    "need not show the full run's conclusions (run without --quick for those)"
)


def _collapse(args: argparse.Namespace) -> dict:
    """All four experiments: summary table, results.json and plots in ``args.out``."""
    from inference.studies import plots
    from inference.studies.experiments import DEFAULT_BUDGET, QUICK_BUDGET
    from inference.studies.remedies import collapse_study, format_remedies

    budget = QUICK_BUDGET if args.quick else DEFAULT_BUDGET
    results, remedies = collapse_study(budget, **_study_options(args, "collapse"))
    if args.quick:
        print(f"{SMOKE_TEST}\n")
    print(format_summary(results))
    for result in results:
        print(f"{result.key:<3} {result.finding()}")
    print(f"\n{GAPS_TITLE}:\n{format_gaps(results)}")
    print(f"\n{REMEDIES_TITLE}:\n{format_remedies(remedies)}")
    report = {
        "smoke_test": args.quick,
        "budget": asdict(budget),
        "seed": args.seed,
        "experiments": [result.to_dict() for result in results],
        "remedies": [remedy.to_dict() for remedy in remedies],
    }
    _write_report(
        args.out,
        "results.json",
        report,
        lambda: [
            plots.plot_training_curves(
                results, args.out / "training_curves.png", iw_samples=budget.record_iw_samples
            ),
            plots.plot_rates(results, args.out / "rates.png"),
            plots.plot_iw_against_k(results, args.out / "iw_against_k.png"),
        ],
    )
    return report


def _frontier(args: argparse.Namespace) -> dict:
    """Beta sweeps on built-in pairs: table, JSON and the two plots in ``args.out``."""
    from inference.studies import plots
    from inference.studies.sweeps import built_in_sweeps

    tables = built_in_sweeps(quick=args.quick, **_study_options(args, "frontier"))
    if args.quick:
        print(f"{SMOKE_TEST}\n")
    for name, table in tables.items():
        print(f"{name}\n{table}\n")
    report = {
        "smoke_test": args.quick,
        "seed": args.seed,
        "sweeps": {name: t.to_dict() for name, t in tables.items()},
    }
    _write_report(
        args.out,
        "frontier.json",
        report,
        lambda: [
            plots.plot_rate_distortion(tables, args.out / "rate_distortion.png"),
            plots.plot_log_px_against_rate(tables, args.out / "log_px_against_rate.png"),
        ],
    )
    return report


def _study_options(args: argparse.Namespace, command: str) -> dict:
    """What ``collapse`` and ``frontier`` pass their study alike: the seed, the bars, the
    progress lines (after a smoke test's notice), the workers and their threads."""
    announce = _announcer(command)
    if args.quick:
        announce(SMOKE_TEST)
    return {
        "seed": args.seed,
        "progress": not args.quiet,
        "announce": announce,
        "workers": args.workers,
        "threads": args.threads,
    }


def _write_report(
    out: Path, name: str, report: dict, draw_figures: Callable[[], list[Path]]
) -> None:
    """``report`` as ``out/name`` (JSON), then the figures, and a line naming every file."""
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(report, indent=2))
    figures = draw_figures()
    print(f"wrote {out / name} and {', '.join(str(f) for f in figures)}")


def _announcer(command: str) -> Callable[[str], None]:
    """The progress lines of a multi-run command, on stderr: ``[lvm collapse] row 3 of 9: ...``."""

    def announce(line: str) -> None:
        print(f"[lvm {command}] {line}", file=sys.stderr, flush=True)

    return announce


def _list(args: argparse.Namespace) -> dict:
    """The built-in data sets, models and guides, with a line on each."""
    from inference.studies.registry import GUIDES, MODELS
    from lvm_models import datasets

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
