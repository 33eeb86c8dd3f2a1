"""Inference for latent variable models: exact oracles, bounds, training and diagnostics.

Every estimator takes ``(model, guide, x)``: Pyro programs that follow the plate convention
(every sample site inside ``pyro.plate("data", N)``), and learns which sites are latent or
observed from the trace.
"""

from inference.bounds import Estimate, ImportanceEstimate, elbo, iw_log_marginal
from inference.checks import BoundsReport, check_bounds
from inference.compare import Comparison, ComparisonRow, compare
from inference.diagnostics import Diagnosis, diagnose
from inference.exact import NoExactValueError, exact_log_marginal
from inference.train import FitResult, History, fit

__all__ = [
    "BoundsReport",
    "Comparison",
    "ComparisonRow",
    "Diagnosis",
    "Estimate",
    "FitResult",
    "History",
    "ImportanceEstimate",
    "NoExactValueError",
    "check_bounds",
    "compare",
    "diagnose",
    "elbo",
    "exact_log_marginal",
    "fit",
    "iw_log_marginal",
]
