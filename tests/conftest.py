from __future__ import annotations

import os

import pyro
import pytest
from hypothesis import settings

# Derandomised by default, so the suite gives the same verdict on every run and machine;
# HYPOTHESIS_PROFILE=explore draws fresh examples while developing.
settings.register_profile("derandomized", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "derandomized"))


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same RNG state, so figures and tolerances are reproducible."""
    pyro.set_rng_seed(0)
    yield
