"""The evidence log p(x_1..N) of a whole data set, for models with global latents.

A latent site outside the data plate (mixture weights, shared scales, a topic-word matrix)
couples every data point, so log p(x) has no per-point value. What remains well defined is
the evidence of the data set as one unit, log p(x_1..N) = log integral p(globals)
prod_n p(x_n, z_n given globals) d(globals, z), estimated here by importance sampling with
the guide as the proposal over all latents, global and local (Burda et al., 2016, with the
data set as the single "point"). For per-point figures *given* the globals, fix them with
``pyro.poutine.condition`` and use the per-point estimators.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro.poutine.trace_struct import Trace

from inference._programs import (
    ProgramInfo,
    checked_inputs,
    evaluation_mode,
    is_auxiliary,
    log_density_total,
    particle_traces,
    prepare_pair,
    sample_sites,
    seeded,
)
from inference._validate import check_positive_int
from inference.estimators.ais import ais_log_evidence
from inference.estimators.bounds import (
    _default_chunk_size,
    _delta_method_stderr,
    weight_diagnostics,
)

WHOLE_DATA_SET = "log p(x_1..N): the evidence of the whole data set as one unit, in nats"


@dataclass(frozen=True)
class EvidenceEstimate:
    """An importance-weighted estimate of log p(x_1..N), the whole data set as one unit.

    :ivar value: the estimate, nats for the whole data set (not per point).
    :ivar stderr: its Monte-Carlo standard error (delta method; NaN for one sample).
    :ivar num_samples: K, joint draws of every latent, global and local.
    :ivar num_data: N, the data points the evidence is about.
    :ivar ess: effective sample size of the K weights.
    :ivar khat: their PSIS k-hat (> 0.7: neither value nor stderr can be trusted).
    :ivar label: what ``value`` is, for tables and JSON.
    """

    value: float
    stderr: float
    num_samples: int
    num_data: int
    ess: float
    khat: float
    label: str = WHOLE_DATA_SET

    @property
    def per_point(self) -> float:
        """``value / N``: the evidence spread evenly over the points, to compare with
        per-point figures (it is not the log p(x_n) of any point)."""
        return self.value / self.num_data


def log_evidence(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: int,
    method: str = "iw",
    num_steps: int = 1000,
    chunk_size: int | None = None,
    seed: int | None = None,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
    vectorize: bool | None = None,
) -> EvidenceEstimate:
    """log p(x_1..N), the evidence of the whole data set as one unit.

    ``method="iw"``: log (1/K) sum_k p(x_1..N, g_k, z_k) / q(g_k, z_k given x_1..N), each of
    the K draws a joint draw of every latent site of the guide, the global ones (outside the
    data plate) and the local ones (inside it). ``method="ais"``: annealed importance sampling
    (:func:`inference.ais_log_marginal`) with every continuous latent of the data set in one
    chain state, K = ``num_samples`` chains of ``num_steps`` annealing steps from the guide.
    Either is a stochastic lower bound of the evidence that tends to it (as K, or the
    number of steps, grows). Works for models without global latents too, where it equals
    the sum over points of the per-point figures.

    :param x: data (N, ...); ``model_args``, ``model_kwargs``, ``data_plate``,
        ``vectorize`` as in :func:`inference.elbo`.
    :param int num_samples: K (>= 1): importance samples, or AIS chains.
    :param str method: ``"iw"`` (default) or ``"ais"``.
    :param int num_steps: annealing steps, for ``method="ais"``.
    :returns: an :class:`EvidenceEstimate` in nats for the whole data set.
    """
    check_positive_int("num_samples", num_samples)
    if method not in ("iw", "ais"):
        raise ValueError(f"method must be 'iw' or 'ais'; got {method!r}")
    if method == "ais":
        program = dict(data_plate=data_plate, vectorize=vectorize)
        inputs = checked_inputs(x, model_args, model_kwargs)
        estimate = ais_log_evidence(
            model,
            guide,
            inputs,
            num_steps=num_steps,
            num_chains=num_samples,
            seed=seed,
            program=program,
        )
        return EvidenceEstimate(
            estimate.per_point.item(),
            estimate.per_point_stderr.item(),
            num_samples,
            inputs.num_data,
            estimate.ess.item(),
            estimate.khat.item(),
        )
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    with torch.no_grad(), seeded(seed), evaluation_mode(model, guide):
        inputs, info = prepare_pair(
            model,
            guide,
            x,
            model_args=model_args,
            model_kwargs=model_kwargs,
            data_plate=data_plate,
            vectorize=vectorize,
            allow_global=True,
        )
        chunk = chunk_size or _default_chunk_size(inputs.num_data)
        log_weights = []
        for start in range(0, num_samples, chunk):
            size = min(chunk, num_samples - start)
            for model_trace, guide_trace, count in particle_traces(
                model, guide, inputs, size, info
            ):
                log_weights.append(
                    log_density_total(model_trace, info, count, _counted(model_trace, info))
                    - log_density_total(guide_trace, info, count, _counted(guide_trace, info))
                )
    log_weights = torch.cat(log_weights).double().unsqueeze(-1)  # (K, 1)
    ess, khat = weight_diagnostics(log_weights)
    value = torch.logsumexp(log_weights, 0) - math.log(num_samples)
    stderr = _delta_method_stderr(ess, num_samples)
    return EvidenceEstimate(
        value.item(), stderr.item(), num_samples, inputs.num_data, ess.item(), khat.item()
    )


def _counted(trace: Trace, info: ProgramInfo) -> list[str]:
    """The sites of a trace that enter the evidence: all but auxiliary and given ones."""
    return [
        name
        for name, site in sample_sites(trace)
        if not is_auxiliary(site) and name not in info.given_sites
    ]
