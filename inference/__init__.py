"""Inference for latent variable models: exact oracles, bounds, training and diagnostics.

Every estimator takes ``(model, guide, x)``: Pyro programs that follow the plate convention
(every sample site inside ``pyro.plate("data", N)``), and learns which sites are latent or
observed from the trace.
"""

import ast
import importlib
import importlib.util
from pathlib import Path

# Every public name loads its module on first use (PEP 562), so importing a subpackage, such
# as the `lvm` command line for its --help, does not load torch and Pyro.
_NAMES = {
    "VectorizationWarning": "inference._programs",
    "AISEstimate": "inference.estimators.ais",
    "BDMCResult": "inference.estimators.ais",
    "ais_log_marginal": "inference.estimators.ais",
    "bdmc": "inference.estimators.ais",
    "Estimate": "inference.estimators.bounds",
    "ImportanceEstimate": "inference.estimators.bounds",
    "elbo": "inference.estimators.bounds",
    "iw_log_marginal": "inference.estimators.bounds",
    "BoundsReport": "inference.estimators.checks",
    "check_bounds": "inference.estimators.checks",
    "Comparison": "inference.estimators.compare",
    "ComparisonRow": "inference.estimators.compare",
    "compare": "inference.estimators.compare",
    "Diagnosis": "inference.estimators.diagnostics",
    "diagnose": "inference.estimators.diagnostics",
    "distributed_ais_log_marginal": "inference.estimators.distributed",
    "distributed_iw_log_marginal": "inference.estimators.distributed",
    "EvidenceEstimate": "inference.estimators.evidence",
    "log_evidence": "inference.estimators.evidence",
    "NoExactValueError": "inference.estimators.exact",
    "exact_log_marginal": "inference.estimators.exact",
    "GapDecomposition": "inference.estimators.gaps",
    "gap_decomposition": "inference.estimators.gaps",
    "RateDistortion": "inference.studies.frontier",
    "rate_distortion": "inference.studies.frontier",
    "RunError": "inference.studies.runs",
    "RunSpec": "inference.studies.runs",
    "load_run": "inference.studies.runs",
    "save_run": "inference.studies.runs",
    "AggressiveTraining": "inference.training.aggressive",
    "ELBO": "inference.training.objectives",
    "IWAE": "inference.training.objectives",
    "FreeBits": "inference.training.objectives",
    "JitELBO": "inference.training.objectives",
    "Objective": "inference.training.objectives",
    "ConstantBeta": "inference.training.schedules",
    "CyclicalAnnealing": "inference.training.schedules",
    "KLSchedule": "inference.training.schedules",
    "LinearWarmup": "inference.training.schedules",
    "FitResult": "inference.training.train",
    "History": "inference.training.train",
    "fit": "inference.training.train",
}


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
    module = _NAMES.get(name) or _LAZY_NAMES.get(name)
    if module is not None:
        return getattr(importlib.import_module(module), name)
    if name in _MOVED_MODULES:
        return importlib.import_module(_MOVED_MODULES[name])
    raise AttributeError(f"module 'inference' has no attribute {name!r}")


__all__ = [
    "AISEstimate",
    "AggressiveTraining",
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
    "RunError",
    "RunSpec",
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
    "load_run",
    "log_evidence",
    "rate_distortion",
    "save_run",
    *_LAZY_NAMES,
]
