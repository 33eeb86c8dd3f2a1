"""Exact log p(x): closed forms, enumeration of discrete latents, certified quadrature in 1-D and
2-D."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from guides import PriorGuide
from inference._programs import (
    Inputs,
    ProgramInfo,
    checked_inputs,
    evaluation_mode,
    inspect_program,
    seeded,
    trace_program,
    vectorization_problem,
)
from inference._sites import check_parameters, modules_of
from inference._validate import check_finite_result
from inference.estimators._latent import LatentSpace, enumerated_log_density
from inference.estimators._quadrature import certified_quadrature
from lvm_models import GaussianMixture, LinearGaussian, NoExactValueError

MAX_QUADRATURE_DIM = 2
# The library's own models whose ``log_marginal`` is a closed form of exactly that class.
_CLOSED_FORM_TYPES = (LinearGaussian, GaussianMixture)
_CLAIMED_CLOSED_FORM_TOLERANCE = 1e-3  # nats between a model's own log_marginal and the oracle


def exact_log_marginal(
    model: Callable,
    x: torch.Tensor,
    *,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
) -> torch.Tensor:
    """Exact log p(x) in nats for each row of x (N, D): a tensor of shape (N,).

    Right to about 1e-6 nats, or :class:`NoExactValueError`; never a silently wrong number.
    Tries, in order:

    1. the closed form ``log_marginal(x)`` of the library's exact classes (``LinearGaussian``,
       ``GaussianMixture``; their exact type, not a subclass, whose density may differ);
    2. enumeration: when every latent site is discrete (``support.is_discrete``) with finite
       support, the latents are summed out exactly by Pyro's parallel enumeration and tensor
       variable elimination (works on a user's plain function too);
    3. certified quadrature: when the latent sites are continuous with total dimension 1 or 2
       (see :mod:`inference.estimators._quadrature`): modes found by Newton ascent from many starts,
       wherever they are, a trapezoid rule checked against its sub-grid and its boundary, and
       a coarse pass over the prior's box that must find no mass outside.

    Any other model's own ``log_marginal`` is trusted only as far as the oracle confirms it:
    the oracle's value is returned, with a warning where the two differ by more than 1e-3.

    ``model_args``, ``model_kwargs`` and ``data_plate`` are as in :func:`inference.elbo`.

    :raises NoExactValueError: naming why each route failed.
    """
    inputs = checked_inputs(x, model_args, model_kwargs)
    log_marginal = _exact_log_marginal(model, inputs, data_plate)
    return check_finite_result("log p(x)", log_marginal, inputs.x, NoExactValueError)


def _exact_log_marginal(model: Callable, inputs: Inputs, data_plate: str | None) -> torch.Tensor:
    # The quadrature starts its search from prior draws: a fixed seed keeps it deterministic.
    with torch.no_grad(), seeded(0), evaluation_mode(model):
        if type(model) in _CLOSED_FORM_TYPES and not inputs.args and not inputs.kwargs:
            check_parameters("model", None, modules_of(model))
            return model.log_marginal(inputs.x)
        claimed = getattr(model, "log_marginal", None)
        try:
            value = _oracle_log_marginal(model, inputs, data_plate)
        except NoExactValueError as error:
            if callable(claimed):
                raise NoExactValueError(
                    f"{error}; the model's own log_marginal is not used unchecked: "
                    f"{type(model).__name__} is not one of the library's exact classes "
                    f"({', '.join(t.__name__ for t in _CLOSED_FORM_TYPES)})"
                ) from error
            raise
        if callable(claimed):
            _warn_if_claim_differs(claimed(inputs.x), value, type(model).__name__)
        return value


def _warn_if_claim_differs(claimed: torch.Tensor, value: torch.Tensor, name: str) -> None:
    difference = (claimed.to(value.dtype) - value).abs()
    if not bool((difference <= _CLAIMED_CLOSED_FORM_TOLERANCE).all()):
        warnings.warn(
            f"{name}.log_marginal differs from the certified oracle by up to "
            f"{difference.max().item():.3g} nats; the oracle's value is returned",
            stacklevel=4,
        )


def _oracle_log_marginal(model: Callable, inputs: Inputs, data_plate: str | None) -> torch.Tensor:
    """Enumeration or certified quadrature, chosen from the trace's latent sites."""
    info = inspect_program(model, inputs, data_plate)
    if info.global_sites:
        raise NoExactValueError(
            f"latent site(s) {list(info.global_sites)} lie outside the data plate "
            f"'{info.data_plate}': global latents have no per-point log p(x) (fix them with "
            "pyro.poutine.condition for per-point figures given the globals)"
        )
    problem = vectorization_problem(model, PriorGuide(model), inputs, info)
    if problem is not None:
        raise NoExactValueError(
            "enumeration and quadrature evaluate many latent values in one run of the model, "
            f"which this model cannot take: {problem}"
        )
    model_trace = trace_program(model, inputs)
    fns = {n: model_trace.nodes[n]["fn"] for n in info.latent_sites}
    discrete = [n for n in info.latent_sites if fns[n].support.is_discrete]
    unbounded = [n for n in discrete if not fns[n].has_enumerate_support]
    continuous = [n for n in info.latent_sites if n not in discrete]
    reasons = []
    if unbounded:
        reasons.append(
            f"enumeration: discrete latent site(s) {unbounded} have no finite support to sum "
            "over (no enumerate support)"
        )
    elif not continuous:
        return _enumerate_log_marginal(model, inputs, info)
    else:
        reasons.append(f"enumeration: latent site(s) {continuous} are not discrete")
    dim = sum(fns[n].event_shape.numel() for n in continuous)
    if discrete:
        reasons.append(f"quadrature: latent site(s) {discrete} are discrete")
    elif dim > MAX_QUADRATURE_DIM:
        reasons.append(f"quadrature: the latent has dimension {dim} > {MAX_QUADRATURE_DIM}")
    else:
        try:
            space = LatentSpace.of(model_trace, info, continuous)
        except ValueError as error:
            reasons.append(f"quadrature: {error}")
        else:
            return certified_quadrature(model, inputs, info, space)
    raise NoExactValueError(
        "no exact log p(x) for this model: it has no closed form here; " + "; ".join(reasons)
    )


def _enumerate_log_marginal(model: Callable, inputs: Inputs, info: ProgramInfo) -> torch.Tensor:
    """Sum out every (discrete) latent with parallel enumeration, keeping the data plate."""
    return enumerated_log_density(model, inputs, info, {}, 1)[0]
