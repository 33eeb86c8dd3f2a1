"""Inference for latent variable models: exact oracles, bounds, training and diagnostics."""

from inference.exact import NoExactValueError, exact_log_marginal

__all__ = ["NoExactValueError", "exact_log_marginal"]
