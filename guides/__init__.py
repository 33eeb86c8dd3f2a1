"""Encoders written as Pyro guides: ``guide(x)`` samples every latent site of its model."""

from guides.amortized import AmortizedCategorical, AmortizedGaussian
from guides.exact import ExactPosterior
from guides.mean_field import MeanField
from guides.prior import PriorGuide

__all__ = ["AmortizedCategorical", "AmortizedGaussian", "ExactPosterior", "MeanField", "PriorGuide"]
