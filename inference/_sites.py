"""Checks on what a program's trace holds, each naming the site or parameter at fault.

Torch's own validation (when on) stops at the first bad distribution with a message that
names neither the program nor the site; these checks run on the traces the estimators make
anyway, and also when Pyro's validation is switched off, so a bad parameter, a guide draw of
the wrong shape, dtype or support never turns into a silent NaN or a traceback from torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pyro
import torch
from pyro.distributions import Delta
from pyro.poutine.trace_struct import Trace
from torch.distributions import Distribution, constraints

from lvm_models._base import forked_rng


def check_parameters(
    role: str, trace: Trace | None, modules: Iterable[torch.nn.Module] = ()
) -> None:
    """Every parameter the program uses (its param sites, and its modules') must be finite.

    :raises ValueError: naming the first parameter with NaN or inf.
    """
    nodes = trace.nodes.items() if trace is not None else ()
    named = [(name, site["value"]) for name, site in nodes if site["type"] == "param"]
    named += [
        (f"{type(module).__name__}.{name}", p)
        for module in modules
        for name, p in module.named_parameters()
    ]
    for name, value in named:
        if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value).all()):
            raise ValueError(f"the {role}'s parameter '{name}' contains NaN or inf")


def check_device(role: str, fn: Callable, x: torch.Tensor) -> None:
    """The parameters and buffers of the program's modules must be on x's device, where its
    draws and log-densities are computed.

    :raises ValueError: naming both devices and the first tensor elsewhere.
    """
    for module in modules_of(fn):
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.device != x.device:
                raise ValueError(
                    f"x is on {x.device} but the {role}'s {type(module).__name__}.{name} is on "
                    f"{tensor.device}: put data, model and guide on one device (e.g. "
                    f"{role}.to(x.device))"
                )


def check_distributions(role: str, trace: Trace, observed: bool = False) -> None:
    """Every sample site's distribution has parameters inside their constraints (a scale > 0,
    probabilities in [0, 1], no NaN) and, with ``observed``, observed values inside its
    support. A distribution built with ``validate_args=False`` while validation is on (as
    Pyro's ProdLDA builds its Multinomial) asked not to be checked, and is not.

    :raises ValueError: naming the site, the parameter and the constraint it breaks.
    """
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or _opted_out(site["fn"]):
            continue
        for layer in _layers(site["fn"]):
            problem = _parameter_problem(layer)
            if problem:
                raise ValueError(f"the {role}'s site '{name}': {problem}")
        if observed and site["is_observed"] and not _in_support(site["fn"], site["value"]):
            raise ValueError(
                f"the {role}'s observed site '{name}' holds values outside the support: the "
                f"{_describe(site['fn'])}"
            )


def _opted_out(fn: Distribution) -> bool:
    return Distribution._validate_args and getattr(fn, "_validate_args", True) is False


def check_guide_draws(model_trace: Trace, guide_trace: Trace, latent_sites: Iterable[str]) -> None:
    """Each latent the guide draws must fit the model's site: the shape and dtype the model's
    own prior draw has, and values inside the model's support.

    :param model_trace: a run of the model from its prior (so its shapes are its own).
    :raises ValueError: naming the site and what differs.
    """
    for name in latent_sites:
        if name not in guide_trace.nodes or name not in model_trace.nodes:
            continue
        model_site, guide_site = model_trace.nodes[name], guide_trace.nodes[name]
        drawn, expected = guide_site["value"], model_site["value"]
        if drawn.shape != expected.shape:
            raise ValueError(
                f"the guide's site '{name}' draws values of shape {tuple(drawn.shape)}; the "
                f"model's site '{name}' has shape {tuple(expected.shape)}"
            )
        floating = drawn.is_floating_point() and expected.is_floating_point()
        if floating and drawn.dtype != expected.dtype:
            raise ValueError(
                f"the guide's site '{name}' draws {drawn.dtype} values; the model's site "
                f"is {expected.dtype}: build model and guide in one dtype (or pass dtype=)"
            )
        if _may_leave_support(guide_site["fn"], model_site["fn"], drawn):
            raise ValueError(
                f"the guide's site '{name}' draws outside the model's support: the model's "
                f"{_describe(model_site['fn'])}, the guide's {_describe(guide_site['fn'])}"
            )


def name_the_failure(
    role: str, fn: Callable, run: Callable[[], Trace], x: torch.Tensor, error: Exception
) -> None:
    """After ``run()`` (a trace of ``fn``) raised inside the program: raise a named error for
    the cause where one can be found (x in another dtype than the program's parameters; with
    Pyro's validation off, a bad parameter or distribution), chained to the original."""
    parameters = [p for module in modules_of(fn) for p in module.parameters()]
    dtypes = {p.dtype for p in parameters if p.is_floating_point()}
    if dtypes and x.dtype not in dtypes:
        raise ValueError(
            f"x is {x.dtype} but the {role}'s parameters are {sorted(map(str, dtypes))}: give "
            "x the dtype of the networks (or pass dtype= to cast both)"
        ) from error
    with pyro.validation_enabled(False), forked_rng():
        try:
            trace = run()
        except Exception:  # noqa: BLE001 - no better diagnosis: the original error stands
            return
        try:  # inside the block: nothing here was built with validate_args=False on purpose
            check_parameters(role, trace, modules_of(fn))
            check_distributions(role, trace, observed=True)
        except ValueError as named:
            raise named from error


def modules_of(*programs: Callable) -> list[torch.nn.Module]:
    """The ``torch.nn.Module`` s behind model and guide: a program that is one, the object of
    a bound method that is one, or the modules held as attributes of a bound method's plain
    object (the pattern of Pyro's examples: ``model`` and ``guide`` methods of one class)."""
    found: dict[int, torch.nn.Module] = {}
    for program in programs:
        owner = getattr(program, "__self__", program)
        if isinstance(owner, torch.nn.Module):
            found[id(owner)] = owner
        elif hasattr(owner, "__dict__"):
            for value in vars(owner).values():
                if isinstance(value, torch.nn.Module):
                    found[id(value)] = value
    return list(found.values())


def _layers(fn: Distribution) -> list[Distribution]:
    """A distribution and the ones it wraps (Independent, Expanded, Masked, Transformed)."""
    layers = [fn]
    while hasattr(layers[-1], "base_dist"):
        layers.append(layers[-1].base_dist)
    return layers


def _parameter_problem(fn: Distribution) -> str | None:
    for param, constraint in getattr(fn, "arg_constraints", {}).items():
        value = fn.__dict__.get(param)  # lazy parameters (probs of a logits Bernoulli) skipped
        if not isinstance(value, torch.Tensor) or constraints.is_dependent(constraint):
            continue
        ok = constraint.check(value)
        if not bool(ok.all()):
            bad = value.detach()[~ok.expand_as(value)] if ok.shape == value.shape else value
            example = bad.flatten()[:3].tolist()
            return (
                f"parameter '{param}' of {type(fn).__name__} must satisfy {constraint}; "
                f"got values such as {example}"
            )
    return None


def _in_support(fn: Distribution, value: torch.Tensor) -> bool:
    support = fn.support
    if constraints.is_dependent(support):
        return True
    return bool(support.check(value).all())


def _may_leave_support(guide_fn: Distribution, model_fn: Distribution, drawn: torch.Tensor) -> bool:
    """The draw lies outside the model's support, or the guide ranges over the whole real
    line (or real vectors) where the model's support is bounded."""
    model_support = model_fn.support
    if constraints.is_dependent(model_support):
        return False
    if not _in_support(model_fn, drawn):
        return True
    if isinstance(_layers(guide_fn)[-1], Delta):  # a point mass: its draw was checked
        return False
    unbounded = (constraints.real, constraints.real_vector)
    guide_base = _base_support(guide_fn.support)
    return guide_base in unbounded and _base_support(model_support) not in unbounded


def _base_support(support: constraints.Constraint) -> constraints.Constraint:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def _describe(fn: Distribution) -> str:
    base = _layers(fn)[-1]
    return f"{type(base).__name__} has support {_base_support(fn.support)}"
