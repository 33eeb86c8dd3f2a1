"""ArviZ export: guide draws with their importance weights, reference posterior draws and
training history as one ``arviz.InferenceData``, and PSIS diagnostics from ArviZ next to this
library's own.

Groups of the exported ``InferenceData`` (dims ``chain``, ``draw``, ``point`` for the data
points, ``<site>_dim`` for the flattened latent of a site, ``step`` for training):

- ``proposal``: z_k ~ q(z given x) for every latent site of the model (names from the trace),
  one chain of ``num_draws`` draws per point, and ``log_weight`` = log p(x, z_k) -
  log q(z_k given x) of those same draws. These are draws of the guide, not of the posterior:
  only weighted by w_k do they describe p(z given x) (:func:`importance_weighted_summary`).
  So there is no ``posterior`` group, and ``az.summary`` or ``az.plot_posterior`` cannot
  mistake them for posterior draws.
- ``observed_data``: ``data``, the (point, data_dim) array the pair was run on.
- ``reference_posterior`` (optional): draws of p(z given x) from another sampler (e.g. NUTS),
  laid out (chain, draw, point, ...): ``az.summary(idata.reference_posterior)``,
  ``az.rhat(idata.reference_posterior)``.
- ``training`` (optional): the per-step loss of :func:`~inference.fit`, or any recorded
  history (a dict of equal-length lists; its ``"step"`` entry, if any, is the coordinate).

Round trip: ``idata.to_netcdf(path)`` and ``arviz.from_netcdf(path)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from inference._programs import (
    data_first,
    inspect_pair,
    log_weights_of_traces,
    seeded,
    vectorized_traces,
)
from inference._validate import check_data, check_positive_int
from inference.estimators.bounds import _chunk_sizes, _default_chunk_size, weight_diagnostics
from inference.training.train import History

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ announces its refactor on import
    import arviz as az


__all__ = [
    "WeightDiagnostics",
    "importance_weight_diagnostics",
    "importance_weighted_summary",
    "to_inference_data",
]


def to_inference_data(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_draws: int = 1000,
    history: History | Mapping[str, Sequence[float]] | None = None,
    reference_draws: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    seed: int | None = None,
) -> az.InferenceData:
    """Guide draws and their importance log weights (and optional extras) as InferenceData,
    in the groups listed in the module docstring (the draws in ``proposal``).

    :param x: data (N, D).
    :param num_draws: K, draws z_k ~ q(z given x) per point (memory grows with K * N: this is
        an export of the draws, not a streamed estimate).
    :param history: a :class:`~inference.training.train.History` or a dict of per-step lists.
    :param reference_draws: site name -> (chain, draw, N, ...) draws of p(z given x).
    :param seed: seeds the draws; None uses the caller's RNG.
    :returns: an ``arviz.InferenceData`` with the groups listed in the module docstring.
    """
    check_data(x)
    check_positive_int("num_draws", num_draws)
    draws, log_weights = _guide_draws(model, guide, x, num_draws, seed)
    attrs = {
        "created_by": "lvm-suite",
        "num_draws": num_draws,
        "seed": -1 if seed is None else seed,
    }
    coords = {"point": np.arange(x.shape[0])}
    idata = az.from_dict(
        observed_data={"data": x.detach().cpu().numpy()},
        coords=coords,
        dims={"data": ["point", "data_dim"]},
        attrs=attrs,
    )
    groups = {
        "proposal": az.dict_to_dataset(
            {
                **{name: value[None] for name, value in draws.items()},
                "log_weight": log_weights[None],
            },
            coords=coords,
            dims={**{name: ["point", f"{name}_dim"] for name in draws}, "log_weight": ["point"]},
            attrs=attrs,
        )
    }
    if reference_draws is not None:
        groups["reference_posterior"] = _reference_dataset(reference_draws, x.shape[0])
    if history is not None:
        groups["training"] = _history_dataset(history)
    idata.add_groups(groups)
    return idata


def importance_weighted_summary(
    idata: az.InferenceData, quantiles: Sequence[float] = (0.05, 0.5, 0.95)
) -> xr.Dataset:
    """Self-normalised importance-sampling summaries of p(z given x) per point and latent
    coordinate, from the draws and log weights of ``idata.proposal``.

    With normalised weights w~_k = w_k / sum_j w_j of a point's K draws z_k ~ q:
    mean = sum_k w~_k z_k, sd = sqrt(sum_k w~_k (z_k - mean)^2), mcse_mean =
    sqrt(sum_k w~_k^2 (z_k - mean)^2) (its delta-method standard error), and the q-quantile
    the smallest z_k whose cumulative weight reaches q. Owen (2013), "Monte Carlo theory,
    methods and examples", section 9.2: consistent as K grows, biased by O(1/K), and to be
    trusted only where k-hat < 0.7 (:func:`importance_weight_diagnostics`).

    :param quantiles: probabilities in (0, 1).
    :returns: an ``xarray.Dataset`` with a variable per latent site, dims (``statistic``,
        ``point``, ``<site>_dim``); ``statistic`` is ``mean``, ``sd``, ``mcse_mean`` and
        ``q<p>`` for each quantile p (``q0.05``).
    """
    if not all(0 < q < 1 for q in quantiles):
        raise ValueError(f"quantiles must lie in (0, 1); got {tuple(quantiles)}")
    proposal = _proposal(idata).stack(__sample__=("chain", "draw"))
    log_weights = proposal["log_weight"].transpose("__sample__", "point").values  # (K, N)
    weights = np.exp(log_weights - log_weights.max(0))
    weights /= weights.sum(0)  # (K, N)
    names = [name for name in proposal.data_vars if name != "log_weight"]
    statistics = ["mean", "sd", "mcse_mean", *(f"q{q:g}" for q in quantiles)]
    summaries = {}
    for name in names:
        dim = f"{name}_dim"
        draws = proposal[name].transpose("__sample__", "point", dim).values  # (K, N, e)
        summary = _weighted_statistics(draws, weights[..., None], quantiles)  # (s, N, e)
        summaries[name] = (("statistic", "point", dim), summary)
    return xr.Dataset(summaries, coords={"statistic": statistics, "point": proposal["point"]})


@dataclass(frozen=True)
class WeightDiagnostics:
    """Per-point importance-weight diagnostics from this library and from ArviZ, side by side.

    :ivar khat: (N,) Pareto k-hat as :func:`~inference.iw_log_marginal` fits it (Zhang and
        Stephens, as Pyro's ``fit_generalized_pareto``).
    :ivar khat_arviz: (N,) Pareto k-hat of ``arviz.psislw``. Up to K = 29127 draws
        both fit the same tail with the same method and agree to rounding; they part for
        weights so degenerate (k-hat far above 0.7, where neither estimate can be trusted)
        that the tail holds weights below 1e-15 of the largest: Pyro's ``psis_diagnostic``
        drops those, ArviZ keeps them. For larger K, ``khat`` fits the largest
        ``PSIS_MAX_TAIL`` weights and ArviZ the largest 3 sqrt(K): two estimates of the same
        shape, within their standard errors of each other.
    :ivar ess: (N,) effective sample size (sum w)^2 / sum w^2 of the raw weights.
    :ivar ess_arviz: (N,) 1 / sum w~^2 of ArviZ's normalised, Pareto-smoothed weights (PSIS
        ESS; equal to ``ess`` up to the smoothing of the tail).
    """

    khat: torch.Tensor
    khat_arviz: torch.Tensor
    ess: torch.Tensor
    ess_arviz: torch.Tensor


def importance_weight_diagnostics(idata: az.InferenceData) -> WeightDiagnostics:
    """PSIS k-hat and ESS per point of ``idata.proposal.log_weight``, both ways.

    Vehtari et al. (2024), "Pareto smoothed importance sampling", JMLR 25(72).
    """
    log_weights = _proposal(idata)["log_weight"].stack(__sample__=("chain", "draw"))
    smoothed, khat_arviz = az.psislw(log_weights.transpose("point", "__sample__"), reff=1.0)
    ess_arviz = 1.0 / np.exp(2 * smoothed).sum("__sample__")
    ess, khat = weight_diagnostics(
        torch.as_tensor(log_weights.transpose("__sample__", "point").values)
    )
    return WeightDiagnostics(
        khat=khat,
        khat_arviz=torch.as_tensor(khat_arviz.values),
        ess=ess,
        ess_arviz=torch.as_tensor(ess_arviz.values),
    )


def _proposal(idata: az.InferenceData) -> xr.Dataset:
    if "proposal" not in idata.groups():
        raise ValueError(
            "idata must have a 'proposal' group of guide draws and log weights, as "
            f"to_inference_data exports it; got groups {idata.groups()}"
        )
    return idata.proposal


def _guide_draws(
    model: Callable, guide: Callable, x: torch.Tensor, num_draws: int, seed: int | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Latent draws per site (K, N, e) and their log weights (K, N), chunk by chunk."""
    chunk = _default_chunk_size(x.shape[0])
    draws: dict[str, list[torch.Tensor]] = {}
    log_weights = []
    with torch.no_grad(), seeded(seed):
        info = inspect_pair(model, guide, x)
        for size in _chunk_sizes(num_draws, chunk):
            model_trace, guide_trace = vectorized_traces(model, guide, x, size, info)
            log_weights.append(log_weights_of_traces(model_trace, guide_trace, info, size))
            for name in info.latent_sites:
                site = guide_trace.nodes[name]
                value = data_first(site["value"], len(site["fn"].event_shape), info)
                value = value.movedim(0, 1).expand(size, info.num_data, *value.shape[2:])
                draws.setdefault(name, []).append(value.reshape(size, info.num_data, -1))
    return (
        {name: torch.cat(parts).cpu().numpy() for name, parts in draws.items()},
        torch.cat(log_weights).double().cpu().numpy(),
    )


def _weighted_statistics(
    draws: np.ndarray, weights: np.ndarray, quantiles: Sequence[float]
) -> np.ndarray:
    """Mean, sd, mcse of the mean and quantiles of draws (K, ...) under normalised weights
    (K, ...) (broadcast): (3 + len(quantiles), ...)."""
    mean = (weights * draws).sum(0)
    squared_deviations = (draws - mean) ** 2
    sd = np.sqrt((weights * squared_deviations).sum(0))
    mcse = np.sqrt((weights**2 * squared_deviations).sum(0))
    order = np.argsort(draws, axis=0)
    sorted_draws = np.take_along_axis(draws, order, 0)
    cumulative = np.take_along_axis(np.broadcast_to(weights, draws.shape), order, 0).cumsum(0)
    last = draws.shape[0] - 1  # rounding can leave the total weight just below 1
    indices = [np.minimum((cumulative < q).sum(0, keepdims=True), last) for q in quantiles]
    values = [np.take_along_axis(sorted_draws, index, 0)[0] for index in indices]
    return np.stack([mean, sd, mcse, *values])


def _reference_dataset(reference_draws: Mapping[str, object], num_data: int) -> xr.Dataset:
    variables = {}
    for name, value in reference_draws.items():
        array = np.asarray(value)
        if array.ndim < 3 or array.shape[2] != num_data:
            raise ValueError(
                f"reference_draws['{name}'] must have shape (chain, draw, N={num_data}, ...); "
                f"got {array.shape}"
            )
        array = array.reshape(*array.shape[:3], -1)
        variables[name] = (("chain", "draw", "point", f"{name}_dim"), array)
    return xr.Dataset(variables, coords={"point": np.arange(num_data)})


def _history_dataset(history: History | Mapping[str, Sequence[float]]) -> xr.Dataset:
    if isinstance(history, History):
        history = {"step": history.steps, "loss": history.losses}
    columns = {name: np.asarray(values) for name, values in history.items()}
    lengths = {name: column.shape for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"history entries must be equal-length lists; got shapes {lengths}")
    steps = columns.pop("step", None)
    coords = {} if steps is None else {"step": steps}
    return xr.Dataset({name: ("step", column) for name, column in columns.items()}, coords=coords)
