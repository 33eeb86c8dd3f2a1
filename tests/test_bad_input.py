"""Bad input gets an error that names the problem and the argument: the table of what we try.

Each row: what is wrong, the call, the exception and (a pattern of) its message. Errors raised
inside a model or guide carry Pyro's trace shapes after the first line; the first line is ours.
"""

from __future__ import annotations

import re

import pyro
import pyro.distributions as dist
import pytest
import torch

from guides import AmortizedGaussian, MeanField
from inference import compare, diagnose, elbo, exact_log_marginal, fit, iw_log_marginal
from lvm_models import AutoregressiveVAE, BernoulliVAE, LinearGaussian

D, K = 4, 2
X = torch.randn(6, D)


def model() -> LinearGaussian:
    return LinearGaussian(D, K)


def guide() -> AmortizedGaussian:
    return AmortizedGaussian(D, K, hidden=(8,))


def no_plate_model(x):
    z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], K), 1.0).to_event(1))
    pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(-1, D), 1.0).to_event(1), obs=x)


def guide_missing_the_latent(x):
    with pyro.plate("data", x.shape[0]):
        pass


def guide_with_an_extra_site(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.zeros(K), 1.0).to_event(1))
        pyro.sample("w", dist.Normal(0.0, 1.0))


def guide_with_another_plate_size(x):
    with pyro.plate("data", x.shape[0] + 1):
        pyro.sample("z", dist.Normal(torch.zeros(K), 1.0).to_event(1))


def guide_of(loc: float = 0.0, scale: float = 1.0, width: int = K, dtype=torch.float32):
    """A guide for :func:`model` with a fixed Normal, to be given bad numbers."""

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            loc_ = torch.full((width,), loc, dtype=dtype)
            pyro.sample(
                "z", dist.Normal(loc_, torch.full((width,), scale, dtype=dtype)).to_event(1)
            )

    return guide


def one_latent_model(prior: dist.Distribution):
    """A model whose latent ``z`` (one per point) has the given prior (a constrained one)."""

    def model_fn(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            loc = z.reshape(x.shape[0], -1).sum(-1, keepdim=True).expand(-1, D)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    return model_fn


class NetworkGuide:
    """The pattern of Pyro's examples: a network held by an object whose method is the guide;
    the network does not cast its input."""

    def __init__(self) -> None:
        self.net = torch.nn.Linear(D, 2 * K)

    def guide(self, x):
        pyro.module("net", self.net)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.net(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def with_nan_parameter(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        next(module.parameters()).fill_(float("nan"))
    return module


def estimate(x: torch.Tensor, **options):
    return iw_log_marginal(model(), guide(), x, **({"num_samples": 2} | options))


BAD_INPUTS = [
    # (what is wrong, call, exception, message pattern)
    (
        "data with NaN",
        lambda: estimate(X.clone().index_fill_(0, torch.tensor([1]), float("nan"))),
        ValueError,
        "x contains NaN or inf",
    ),
    (
        "data with inf",
        lambda: elbo(model(), guide(), X.clone().fill_(float("inf"))),
        ValueError,
        "x contains NaN or inf",
    ),
    (
        "data of rank 1",
        lambda: estimate(torch.randn(D)),
        ValueError,
        r"x must be 2-D \(N, D\) for LinearGaussian; got shape \(4,\)",
    ),
    (
        "data of rank 3",
        lambda: exact_log_marginal(model(), torch.randn(2, 3, D)),
        ValueError,
        "x must be 2-D",
    ),
    (
        "wrong number of columns for the model",
        lambda: exact_log_marginal(model(), torch.randn(5, D + 1)),
        ValueError,
        "x has 5 columns but this LinearGaussian was built for data_dim=4",
    ),
    (
        "wrong number of columns for the guide",
        lambda: elbo(model(), AmortizedGaussian(D + 1, K), X),
        ValueError,
        "x has 4 columns but this AmortizedGaussian was built for data_dim=5",
    ),
    ("zero rows", lambda: estimate(torch.zeros(0, D)), ValueError, "x must have at least one row"),
    (
        "integer data",
        lambda: estimate(torch.ones(6, D, dtype=torch.int64)),
        TypeError,
        "x must be a floating-point tensor; got dtype torch.int64",
    ),
    (
        "boolean data",
        lambda: fit(model(), guide(), torch.ones(6, D, dtype=torch.bool), steps=1),
        TypeError,
        "data must be a floating-point tensor; got dtype torch.bool",
    ),
    (
        "non-binary data for a Bernoulli model",
        lambda: elbo(BernoulliVAE(D, K), guide(), torch.rand(6, D)),
        ValueError,
        "x must be binary \\(0 or 1\\) for BernoulliVAE",
    ),
    (
        "non-binary data for an autoregressive model",
        lambda: exact_log_marginal(AutoregressiveVAE(D, K), torch.full((3, D), 0.5)),
        ValueError,
        "x must be binary \\(0 or 1\\) for AutoregressiveVAE; it holds 0.5",
    ),
    (
        "num_samples < 1",
        lambda: estimate(X, num_samples=0),
        ValueError,
        "num_samples must be an integer >= 1; got 0",
    ),
    (
        "chunk_size < 1",
        lambda: estimate(X, chunk_size=0),
        ValueError,
        "chunk_size must be an integer >= 1; got 0",
    ),
    (
        "num_particles < 1",
        lambda: elbo(model(), guide(), X, num_particles=-3),
        ValueError,
        "num_particles must be an integer >= 1; got -3",
    ),
    (
        "K < 1 in compare",
        lambda: compare(model(), guide(), X, num_samples=(1, 0)),
        ValueError,
        "num_samples must be an integer >= 1; got 0",
    ),
    (
        "particles_per_row < 1 in compare",
        lambda: compare(model(), guide(), X, particles_per_row=0),
        ValueError,
        "particles_per_row must be an integer >= 1; got 0",
    ),
    (
        "steps < 1",
        lambda: fit(model(), guide(), X, steps=0),
        ValueError,
        "steps must be an integer >= 1; got 0",
    ),
    (
        "negative learning rate",
        lambda: fit(model(), guide(), X, lr=-0.1, steps=1),
        ValueError,
        "lr must be a finite number > 0; got -0.1",
    ),
    (
        "NaN learning rate",
        lambda: fit(model(), guide(), X, lr=float("nan"), steps=1),
        ValueError,
        "lr must be a finite number > 0; got nan",
    ),
    (
        "batch larger than the data",
        lambda: fit(model(), guide(), X, batch_size=7, steps=1),
        ValueError,
        "batch_size must be at most N=6; got 7",
    ),
    (
        "unknown objective",
        lambda: fit(model(), guide(), X, objective="kl", steps=1),
        ValueError,
        "objective must be one of",
    ),
    (
        "a guide that misses a latent site",
        lambda: elbo(model(), guide_missing_the_latent, X),
        ValueError,
        r"the guide does not sample latent site\(s\) \['z'\]",
    ),
    (
        "a guide that misses a latent site, in fit",
        lambda: fit(model(), guide_missing_the_latent, X, steps=1),
        ValueError,
        r"the guide does not sample latent site\(s\) \['z'\]",
    ),
    (
        "a guide that samples a site the model lacks",
        lambda: diagnose(model(), guide_with_an_extra_site, X),
        ValueError,
        r"the guide samples site\(s\) \['w'\] that the model does not have",
    ),
    (
        "a guide with another data-plate size",
        lambda: estimate_with(guide_with_another_plate_size),
        ValueError,
        "the guide's data plate 'data' has size 7",
    ),
    (
        "a mean-field guide for other data",
        lambda: elbo(model(), MeanField(5, K), X),
        ValueError,
        "x must have num_data=5 rows; got 6",
    ),
    (
        "a float seed in an estimator",
        lambda: elbo(model(), guide(), X, seed=1.5),
        ValueError,
        r"seed must be None or an integer in \[0, 2\*\*63 - 1\]; got 1.5",
    ),
    (
        "a string seed in an estimator",
        lambda: iw_log_marginal(model(), guide(), X, num_samples=2, seed="3"),
        ValueError,
        "seed must be None or an integer",
    ),
    (
        "a seed beyond torch's range",
        lambda: elbo(model(), guide(), X, seed=2**63),
        ValueError,
        "seed must be None or an integer",
    ),
    (
        "a fractional K in compare",
        lambda: compare(model(), guide(), X, num_samples=(2.7,)),
        ValueError,
        "num_samples must be an integer >= 1; got 2.7",
    ),
    (
        "an exact value per point of the wrong shape",
        lambda: compare(model(), guide(), X, num_samples=(1,), exact=torch.zeros(3)),
        ValueError,
        r"exact must have shape \(6,\), one value per point; got \(3,\)",
    ),
    (
        "an exact value with NaN",
        lambda: diagnose(model(), guide(), X, exact=torch.full((6,), float("nan"))),
        ValueError,
        "exact contains NaN or inf",
    ),
    (
        "a rate threshold given as a string",
        lambda: diagnose(model(), guide(), X, rate_threshold="0.1"),
        ValueError,
        "rate_threshold must be a number > 0",
    ),
    (
        "a single K instead of a sequence",
        lambda: compare(model(), guide(), X, num_samples=5),
        TypeError,
        r"num_samples must be a sequence of integers K",
    ),
    (
        "no K at all",
        lambda: compare(model(), guide(), X, num_samples=()),
        ValueError,
        "num_samples must name at least one K",
    ),
    (
        "an infinite noise scale",
        lambda: LinearGaussian.from_params(torch.ones(D, K), torch.zeros(D), float("inf")),
        ValueError,
        "noise_scale must be positive and finite",
    ),
    (
        "wrong columns with Pyro's validation switched off",
        lambda: _without_validation(lambda: elbo(model(), guide(), torch.randn(6, 1))),
        ValueError,
        "x has 1 columns but this LinearGaussian was built for data_dim=4",
    ),
    (
        "non-binary data with Pyro's validation switched off",
        lambda: _without_validation(
            lambda: elbo(BernoulliVAE(D, K, hidden=(8,)), guide(), torch.full((6, D), 0.5))
        ),
        ValueError,
        "x must be binary",
    ),
    (
        "a model without the data plate",
        lambda: elbo(no_plate_model, guide(), X),
        ValueError,
        r"the model has no vectorised pyro.plate of size N=",
    ),
    (
        "a model without the data plate, exact",
        lambda: exact_log_marginal(no_plate_model, X),
        ValueError,
        r"the model has no vectorised pyro.plate of size N=",
    ),
    (
        "sparse data",
        lambda: estimate(X.to_sparse()),
        TypeError,
        "x must be a dense tensor; got layout torch.sparse_coo",
    ),
    (
        "data on the meta device",
        lambda: estimate(X.to("meta")),
        ValueError,
        "x is on the meta device, which holds shapes but no values",
    ),
    (
        "num_samples=None",
        lambda: estimate(X, num_samples=None),
        ValueError,
        "num_samples must be an integer >= 1; got None",
    ),
    (
        "num_samples as a string",
        lambda: estimate(X, num_samples="10"),
        ValueError,
        "num_samples must be an integer >= 1; got '10'",
    ),
    (
        "num_replicates=0",
        lambda: estimate(X, num_replicates=0),
        ValueError,
        "num_replicates must be an integer >= 1; got 0",
    ),
    (
        "a guide whose scale is zero",
        lambda: elbo(model(), guide_of(scale=0.0), X),
        ValueError,
        r"the guide's site 'z': parameter 'scale' of Normal must satisfy GreaterThan",
    ),
    (
        "a guide whose scale is negative, Pyro's validation off",
        lambda: _without_validation(lambda: estimate_with(guide_of(scale=-1.0))),
        ValueError,
        r"the guide's site 'z': parameter 'scale' of Normal must satisfy GreaterThan",
    ),
    (
        "a guide whose mean is NaN, Pyro's validation off",
        lambda: _without_validation(lambda: elbo(model(), guide_of(loc=float("nan")), X)),
        ValueError,
        r"the guide's site 'z': parameter 'loc' of Normal must satisfy Real\(\); got .*nan",
    ),
    (
        "a guide whose draws have the wrong shape",
        lambda: estimate_with(guide_of(width=K + 1)),
        ValueError,
        r"the guide's site 'z' draws values of shape \(6, 3\); the model's site 'z' has shape "
        r"\(6, 2\)",
    ),
    (
        "a float32 guide for a float64 model",
        lambda: elbo(model().double(), guide_of(), X.double()),
        ValueError,
        "the guide's site 'z' draws torch.float32 values; the model's site is torch.float64",
    ),
    (
        "float64 data for a float32 guide network",
        lambda: elbo(model().double(), NetworkGuide().guide, X.double()),
        ValueError,
        r"x is torch.float64 but the guide's parameters are \['torch.float32'\]",
    ),
    (
        "a model parameter with NaN",
        lambda: estimate_with_model(with_nan_parameter(model())),
        ValueError,
        r"the model's parameter '.*weight' contains NaN or inf",
    ),
    (
        "a model parameter with NaN, exact",
        lambda: exact_log_marginal(with_nan_parameter(model()), X),
        ValueError,
        r"the model's parameter 'LinearGaussian.weight' contains NaN or inf",
    ),
    (
        "a guide parameter with NaN",
        lambda: elbo(model(), with_nan_parameter(guide()), X),
        ValueError,
        r"the guide's parameter '.*weight' contains NaN or inf",
    ),
    (
        "a Normal guide for a Gamma latent",
        lambda: estimate_with_model(
            one_latent_model(dist.Gamma(torch.full((1,), 2.0), 1.0).to_event(1)), guide_of(width=1)
        ),
        ValueError,
        r"the guide's site 'z' draws outside the model's support: the model's Gamma has support "
        r"GreaterThanEq\(lower_bound=0.0\), the guide's Normal has support Real\(\)",
    ),
    (
        "a Gamma guide for a Beta latent",
        lambda: estimate_with_model(
            one_latent_model(dist.Beta(2.0, 2.0)), _gamma_guide, num_samples=64
        ),
        ValueError,
        r"the model's Beta has support Interval\(lower_bound=0.0, upper_bound=1.0\), the "
        r"guide's Gamma",
    ),
    (
        "a Normal guide for a Dirichlet latent",
        lambda: estimate_with_model(
            one_latent_model(dist.Dirichlet(torch.ones(3))), guide_of(width=3)
        ),
        ValueError,
        r"the model's Dirichlet has support Simplex\(\), the guide's Normal has support Real",
    ),
    (
        "data of 1e30 overflowing float32, exact",
        lambda: exact_log_marginal(model(), torch.full((2, D), 1e30)),
        ValueError,
        r"log p\(x\) is \[-inf, -inf\] at point\(s\) \[0, 1\]: x reaches 1e\+30, whose "
        r"squares overflow torch.float32",
    ),
    (
        "data of 3e19 overflowing float32, IW",
        lambda: estimate(torch.full((2, D), 3e19)),
        ValueError,
        r"the IW estimate is .* x reaches 3e\+19, whose squares overflow torch.float32",
    ),
    (
        "data of 3e19 overflowing float32, ELBO",
        lambda: elbo(model(), guide(), torch.full((2, D), 3e19)),
        ValueError,
        r"the ELBO is .* compute in float64",
    ),
]


def _gamma_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Gamma(2.0, 1.0))


def estimate_with_model(model_fn, guide_fn=None, num_samples: int = 2):
    return iw_log_marginal(model_fn, guide_fn or guide(), X, num_samples=num_samples, seed=0)


def _without_validation(call):
    with pyro.validation_enabled(False):
        return call()


def estimate_with(guide_fn):
    return iw_log_marginal(model(), guide_fn, X, num_samples=2)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [row[1:] for row in BAD_INPUTS],
    ids=[row[0] for row in BAD_INPUTS],
)
def test_bad_input_gets_an_error_naming_the_problem(call, error, message):
    with pytest.raises(error) as raised:
        call()
    first_line = str(raised.value).splitlines()[0]
    assert re.search(message, first_line), first_line
