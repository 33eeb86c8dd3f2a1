"""Fuzzed inputs to the public functions: every call ends in a result without NaN or in one of
the documented errors (ValueError, TypeError and their subclasses), never an internal crash."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from guides import AmortizedGaussian
from inference import compare, diagnose, elbo, exact_log_marginal, fit, iw_log_marginal
from lvm_models import BernoulliVAE, LinearGaussian

D = 3
DOCUMENTED_ERRORS = (ValueError, TypeError)
SPECIAL_VALUES = [0.0, 1.0, -1.0, 1e30, -1e30, 1e-30, math.nan, math.inf, -math.inf]
DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "bool": np.bool_}


@st.composite
def tensors(draw) -> torch.Tensor:
    """Arrays of rank 0-3 (mostly (N, D)), any of four dtypes, values from the awkward ones."""
    dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
    shape = draw(
        st.one_of(
            st.tuples(st.integers(0, 6), st.just(D)),
            st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
        )
    )
    if dtype is np.bool_:
        elements = st.booleans()
    elif dtype is np.int64:
        elements = st.integers(-3, 3)
    else:
        width = 32 if dtype is np.float32 else 64
        elements = st.one_of(
            st.sampled_from(SPECIAL_VALUES).map(lambda v: float(np.asarray(v, dtype))),
            st.floats(-10, 10, width=width),
        )
    return torch.from_numpy(draw(arrays(dtype, shape, elements=elements)))


def pairs():
    torch.manual_seed(0)
    return st.sampled_from(
        [
            (LinearGaussian(D, 1), AmortizedGaussian(D, 1, hidden=(4,))),
            (BernoulliVAE(D, 1, hidden=(4,)), AmortizedGaussian(D, 1, hidden=(4,))),
        ]
    )


def ends_well(call) -> None:
    """The call returns a result free of NaN, or raises a documented error."""
    try:
        result = call()
    except DOCUMENTED_ERRORS:
        return
    per_point = result if isinstance(result, torch.Tensor) else getattr(result, "per_point", None)
    if per_point is not None:
        assert not bool(torch.isnan(per_point).any()), per_point
    for name in ("mean", "rate", "distortion"):
        if isinstance(getattr(result, name, None), float):
            assert not math.isnan(getattr(result, name)), name


counts = st.integers(-2, 4)
optional_counts = st.one_of(st.none(), counts)


@settings(max_examples=60, deadline=None)
@given(pairs(), tensors(), counts, optional_counts)
def test_importance_weighted_estimate(pair, x, num_samples, chunk_size):
    model, guide = pair
    ends_well(
        lambda: iw_log_marginal(
            model, guide, x, num_samples=num_samples, chunk_size=chunk_size, seed=0
        )
    )


@settings(max_examples=60, deadline=None)
@given(pairs(), tensors(), counts)
def test_elbo(pair, x, num_particles):
    model, guide = pair
    ends_well(lambda: elbo(model, guide, x, num_particles=num_particles, seed=0))


@settings(max_examples=40, deadline=None)
@given(pairs(), tensors())
def test_exact_log_marginal(pair, x):
    model, _ = pair
    ends_well(lambda: exact_log_marginal(model, x))


@settings(max_examples=25, deadline=None)
@given(pairs(), tensors(), st.lists(counts, min_size=1, max_size=3))
def test_compare(pair, x, num_samples):
    model, guide = pair
    ends_well(lambda: compare(model, guide, x, num_samples=num_samples, seed=0))


@settings(max_examples=25, deadline=None)
@given(pairs(), tensors())
def test_diagnose(pair, x):
    model, guide = pair
    ends_well(lambda: diagnose(model, guide, x, seed=0))


@settings(max_examples=40, deadline=None)
@given(
    pairs(),
    tensors(),
    counts,
    optional_counts,
    st.sampled_from([1e-2, 0.0, -1.0, math.nan, math.inf]),
)
def test_fit(pair, x, steps, batch_size, lr):
    model, guide = pair
    ends_well(
        lambda: fit(
            model, guide, x, steps=steps, batch_size=batch_size, lr=lr, seed=0, progress=False
        )
    )


@pytest.mark.parametrize("value", [1e30, -1e30])
def test_data_beyond_float32_range_gives_no_nan(value):
    model, guide = LinearGaussian(D, 1), AmortizedGaussian(D, 1, hidden=(4,))
    x = torch.full((2, D), value)
    ends_well(lambda: iw_log_marginal(model, guide, x, num_samples=4, seed=0))
    ends_well(lambda: exact_log_marginal(model, x))
