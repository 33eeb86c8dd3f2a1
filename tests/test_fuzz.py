"""Fuzzed inputs to the public functions: every call ends in a finite result or in one of
the documented errors (ValueError, TypeError and their subclasses), never an internal crash,
a NaN or an infinity. Fuzzed: data (shape, dtype, values, layout, device), scalar options
(seeds, counts, of any type), guides with bad numbers (zero, negative, NaN or infinite scales
and means, the wrong width or dtype, another support than the model's latent), models with a
NaN parameter, and the ``dtype=`` option, which must give the caller's tensors back intact."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
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
    tensor = torch.from_numpy(draw(arrays(dtype, shape, elements=elements)))
    return _placed(tensor, draw(st.sampled_from(["dense", "dense", "dense", "sparse", "meta"])))


def _placed(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "sparse" and tensor.dim() > 0:
        return tensor.to_sparse()
    if layout == "meta":
        return tensor.to("meta")
    return tensor


def pairs():
    torch.manual_seed(0)
    return st.sampled_from(
        [
            (LinearGaussian(D, 1), AmortizedGaussian(D, 1, hidden=(4,))),
            (BernoulliVAE(D, 1, hidden=(4,)), AmortizedGaussian(D, 1, hidden=(4,))),
        ]
    )


def ends_well(call) -> None:
    """The call returns a finite result (no NaN, no infinity), or raises a documented error."""
    try:
        result = call()
    except DOCUMENTED_ERRORS:
        return
    per_point = result if isinstance(result, torch.Tensor) else getattr(result, "per_point", None)
    if per_point is not None:
        assert bool(torch.isfinite(per_point).all()), per_point
    for name in ("mean", "rate", "distortion"):
        if isinstance(getattr(result, name, None), float):
            assert math.isfinite(getattr(result, name)), name


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


# Scalars of every type a user might pass where an integer or a seed is asked for.
any_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.integers(-3, 5).map(np.int64),
    st.just(()),
)


@settings(max_examples=60, deadline=None)
@given(any_scalar, any_scalar, any_scalar, any_scalar)
def test_scalar_options_of_any_type(num_samples, num_replicates, chunk_size, seed):
    model, guide = LinearGaussian(D, 1), AmortizedGaussian(D, 1, hidden=(4,))
    x = torch.randn(3, D)
    ends_well(
        lambda: iw_log_marginal(
            model,
            guide,
            x,
            num_samples=num_samples,
            num_replicates=num_replicates,
            chunk_size=chunk_size,
            seed=seed,
        )
    )


@settings(max_examples=20, deadline=None)
@given(any_scalar)
def test_fit_seed_of_any_type(seed):
    model, guide = LinearGaussian(D, 1), AmortizedGaussian(D, 1, hidden=(4,))
    ends_well(lambda: fit(model, guide, torch.randn(3, D), steps=1, seed=seed, progress=False))


awkward_numbers = st.sampled_from(SPECIAL_VALUES)


def fixed_guide(loc: float, scale: float, width: int, dtype: torch.dtype):
    """A guide of one Normal with the given (possibly bad) numbers, width and dtype."""

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            loc_ = torch.full((width,), loc, dtype=dtype)
            scale_ = torch.full((width,), scale, dtype=dtype)
            pyro.sample("z", dist.Normal(loc_, scale_).to_event(1))

    return guide


@settings(max_examples=80, deadline=None)
@given(
    awkward_numbers,
    awkward_numbers,
    st.integers(0, 3),
    st.sampled_from([torch.float32, torch.float64]),
    st.booleans(),
)
def test_guides_with_bad_numbers(loc, scale, width, dtype, validation):
    model = LinearGaussian(D, 2)
    guide = fixed_guide(loc, scale, width, dtype)
    with pyro.validation_enabled(validation):
        ends_well(lambda: iw_log_marginal(model, guide, torch.randn(3, D), num_samples=3, seed=0))
        ends_well(lambda: elbo(model, guide, torch.randn(3, D), num_particles=2, seed=0))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 20), awkward_numbers, st.booleans())
def test_models_with_a_bad_parameter(index, value, validation):
    model = BernoulliVAE(D, 1, hidden=(4,))
    parameters = list(model.parameters())
    with torch.no_grad():
        parameters[index % len(parameters)].view(-1)[0] = value
    guide = AmortizedGaussian(D, 1, hidden=(4,))
    x = torch.bernoulli(torch.full((3, D), 0.5))
    with pyro.validation_enabled(validation):
        ends_well(lambda: iw_log_marginal(model, guide, x, num_samples=3, seed=0))


# Latent families with their supports; a guide from another family may leave the model's support.
FAMILIES = {
    "Normal": lambda: dist.Normal(0.5, 1.0),
    "Gamma": lambda: dist.Gamma(2.0, 2.0),
    "Beta": lambda: dist.Beta(2.0, 2.0),
    "LogNormal": lambda: dist.LogNormal(0.0, 0.5),
    "Uniform": lambda: dist.Uniform(-1.0, 1.0),
}


def scalar_latent_program(family: str, observed: bool):
    def program(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", FAMILIES[family]())
            if observed:
                pyro.sample("x", dist.Normal(z.unsqueeze(-1).expand(-1, D), 1.0).to_event(1), obs=x)

    return program


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(FAMILIES)), st.sampled_from(sorted(FAMILIES)), st.booleans())
def test_guides_of_another_support(model_family, guide_family, validation):
    model = scalar_latent_program(model_family, observed=True)
    guide = scalar_latent_program(guide_family, observed=False)
    with pyro.validation_enabled(validation):
        ends_well(lambda: iw_log_marginal(model, guide, torch.randn(3, D), num_samples=16, seed=0))


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from([torch.float32, torch.float64]),
    st.sampled_from([None, torch.float32, torch.float64]),
    st.booleans(),
)
def test_dtype_option_gives_the_tensors_back_intact(module_dtype, dtype, inference_mode):
    model = BernoulliVAE(D, 1, hidden=(4,)).to(module_dtype)
    guide = AmortizedGaussian(D, 1, hidden=(4,)).to(module_dtype)
    before = [t.clone() for t in [*model.state_dict().values(), *guide.state_dict().values()]]
    x = torch.bernoulli(torch.full((3, D), 0.5)).to(module_dtype)
    with torch.inference_mode(inference_mode):
        ends_well(lambda: elbo(model, guide, x, num_particles=2, seed=0, dtype=dtype))
    after = [*model.state_dict().values(), *guide.state_dict().values()]
    for old, new in zip(before, after):
        assert old.dtype == new.dtype and torch.equal(old, new) and not new.is_inference()
