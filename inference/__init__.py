"""Inference for latent variable models: exact oracles, bounds, training and diagnostics.

Every estimator takes ``(model, guide, x)``: Pyro programs that follow the plate convention
(every sample site inside ``pyro.plate("data", N)``), and learns which sites are latent or
observed from the trace.
"""

import importlib

from inference._programs import VectorizationWarning
from inference.ais import AISEstimate, BDMCResult, ais_log_marginal, bdmc
from inference.bounds import Estimate, ImportanceEstimate, elbo, iw_log_marginal
from inference.checks import BoundsReport, check_bounds
from inference.compare import Comparison, ComparisonRow, compare
from inference.diagnostics import Diagnosis, diagnose
from inference.evidence import EvidenceEstimate, log_evidence
from inference.exact import NoExactValueError, exact_log_marginal
from inference.frontier import RateDistortion, rate_distortion
from inference.train import FitResult, History, fit

# The public names of inference.numpyro_backend (its __all__, written out: reading it would
# import the backend).
_NUMPYRO_BACKEND_NAMES = (
    "NumPyroGuide",
    "NumPyroModel",
    "ReferenceEstimate",
    "UnreliableReferenceWarning",
    "amortization_gap",
    "numpyro_elbo",
    "numpyro_exact_log_marginal",
    "numpyro_iw_log_marginal",
    "nuts_log_marginal",
    "to_numpyro",
)
# These names load their module on first use: the NumPyro backend imports JAX and NumPyro and
# turns on JAX's 64-bit mode, the ArviZ export imports ArviZ; a user of the PyTorch estimators
# should pay for neither.
_LAZY_NAMES = {
    **dict.fromkeys(_NUMPYRO_BACKEND_NAMES, "inference.numpyro_backend"),
    **dict.fromkeys(
        ("WeightDiagnostics", "importance_weight_diagnostics", "to_inference_data"),
        "inference.arviz_export",
    ),
}


def __getattr__(name: str) -> object:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'inference' has no attribute {name!r}")


__all__ = [
    "AISEstimate",
    "BDMCResult",
    "BoundsReport",
    "Comparison",
    "ComparisonRow",
    "Diagnosis",
    "Estimate",
    "EvidenceEstimate",
    "FitResult",
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
    "elbo",
    "exact_log_marginal",
    "fit",
    "iw_log_marginal",
    "log_evidence",
    "rate_distortion",
    *_LAZY_NAMES,
]
