"""Encoders written as Pyro guides: ``guide(x)`` samples every latent site of its model."""

from guides.amortized import AmortizedCategorical, AmortizedGaussian
from guides.batchnorm import BatchNormGaussian
from guides.committed import (
    CommittedRateGaussian,
    NonStandardPriorError,
    check_standard_normal_prior,
)
from guides.exact import ExactPosterior
from guides.mean_field import MeanField
from guides.prior import PriorGuide

__all__ = [
    "AmortizedCategorical",
    "AmortizedGaussian",
    "BatchNormGaussian",
    "CommittedRateGaussian",
    "ExactPosterior",
    "MeanField",
    "NonStandardPriorError",
    "PriorGuide",
    "check_standard_normal_prior",
]
