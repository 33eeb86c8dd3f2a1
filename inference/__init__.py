"""Inference for latent variable models: exact oracles, bounds, training and diagnostics.

Every estimator takes ``(model, guide, x)``: Pyro programs that follow the plate convention
(every sample site inside ``pyro.plate("data", N)``), and learns which sites are latent or
observed from the trace.
"""

import ast
import importlib
import importlib.util
from pathlib import Path

from inference._programs import VectorizationWarning
from inference.estimators.ais import AISEstimate, BDMCResult, ais_log_marginal, bdmc
from inference.estimators.bounds import Estimate, ImportanceEstimate, elbo, iw_log_marginal
from inference.estimators.checks import BoundsReport, check_bounds
from inference.estimators.compare import Comparison, ComparisonRow, compare
from inference.estimators.diagnostics import Diagnosis, diagnose
from inference.estimators.distributed import (
    distributed_ais_log_marginal,
    distributed_iw_log_marginal,
)
from inference.estimators.evidence import EvidenceEstimate, log_evidence
from inference.estimators.exact import NoExactValueError, exact_log_marginal
from inference.estimators.gaps import GapDecomposition, gap_decomposition
from inference.studies.frontier import RateDistortion, rate_distortion
from inference.training.objectives import ELBO, IWAE, FreeBits, JitELBO, Objective
from inference.training.schedules import (
    ConstantBeta,
    CyclicalAnnealing,
    KLSchedule,
    LinearWarmup,
)
from inference.training.train import FitResult, History, fit


def _public_names(module: str) -> list[str]:
    """A module's ``__all__``, read from its source without importing it."""
    source = Path(importlib.util.find_spec(module).origin).read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            getattr(target, "id", None) == "__all__" for target in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise ImportError(f"{module} has no __all__")


# These names load their module on first use: the NumPyro backend imports JAX and NumPyro and
# turns on JAX's 64-bit mode, the ArviZ export imports ArviZ; a user of the PyTorch estimators
# should pay for neither. Their lists are the modules' own ``__all__``, not copies.
_LAZY_MODULES = ("inference.backends.numpyro", "inference.backends.arviz")
_LAZY_NAMES = {name: module for module in _LAZY_MODULES for name in _public_names(module)}


# The backends' modules under the names they had before the package had subpackages.
_MOVED_MODULES = {"numpyro_backend": _LAZY_MODULES[0], "arviz_export": _LAZY_MODULES[1]}


def __getattr__(name: str) -> object:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    if name in _MOVED_MODULES:
        return importlib.import_module(_MOVED_MODULES[name])
    raise AttributeError(f"module 'inference' has no attribute {name!r}")


__all__ = [
    "AISEstimate",
    "ConstantBeta",
    "CyclicalAnnealing",
    "ELBO",
    "FreeBits",
    "IWAE",
    "JitELBO",
    "KLSchedule",
    "LinearWarmup",
    "Objective",
    "BDMCResult",
    "BoundsReport",
    "Comparison",
    "ComparisonRow",
    "Diagnosis",
    "Estimate",
    "EvidenceEstimate",
    "FitResult",
    "GapDecomposition",
    "History",
    "ImportanceEstimate",
    "NoExactValueError",
    "RateDistortion",
    "VectorizationWarning",
    "ais_log_marginal",
    "bdmc",
    "check_bounds",
    "compare",
    "diagnose",
    "distributed_ais_log_marginal",
    "distributed_iw_log_marginal",
    "elbo",
    "exact_log_marginal",
    "fit",
    "gap_decomposition",
    "iw_log_marginal",
    "log_evidence",
    "rate_distortion",
    *_LAZY_NAMES,
]
