"""The ``lvm`` command line: calls the library the way a user would."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from inference.exact import exact_log_marginal
from lvm_models import datasets, ppca_max_likelihood


def _exact(args: argparse.Namespace) -> int:
    data = datasets.load(args.data, seed=args.seed)
    x = data.x.double()
    model = ppca_max_likelihood(x, args.latent_dim)
    rows = {
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
        rows["true_log_density"] = data.log_density(x).mean().item()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(map(len, rows))
        for key, value in rows.items():
            shown = f"{value:.4f}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0


def _list(args: argparse.Namespace) -> int:
    for name, loader in datasets.DATASETS.items():
        print(f"{name:<22} {loader(seed=0).description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvm", description="Latent variable models in Pyro: exact log p(x) and its bounds."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    exact = commands.add_parser(
        "exact",
        help="fit probabilistic PCA in closed form and print exact average log p(x) in nats",
    )
    exact.add_argument("--data", default="correlated-gaussian", choices=list(datasets.DATASETS))
    exact.add_argument("--latent-dim", type=int, default=2)
    exact.add_argument("--seed", type=int, default=0)
    exact.add_argument("--json", action="store_true", help="print JSON instead of a table")
    exact.set_defaults(run=_exact)
    listing = commands.add_parser("list", help="name the built-in data sets")
    listing.set_defaults(run=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed if hasattr(args, "seed") else 0)
    try:
        return args.run(args)
    except ValueError as error:
        print(f"lvm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
