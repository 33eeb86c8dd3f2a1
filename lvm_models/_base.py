"""What every built-in latent variable model shares: the generative program and the plate.

A model here is a :class:`pyro.nn.PyroModule` whose ``forward(x)`` draws the latent ``"z"``
from :meth:`LatentVariableModel.prior` and observes ``"x"`` from
:meth:`LatentVariableModel.likelihood`, both inside ``pyro.plate("data", N)``. A subclass
supplies the two distributions (and, where it can, ``log_marginal``); the program is written
once.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pyro
import torch
from pyro import distributions as dist
from pyro.nn import PyroModule

_instance_counter = itertools.count()


class NoExactValueError(ValueError):
    """Raised when no exact route to log p(x) applies; the message says why."""


def unique_pyro_name(prefix: str) -> str:
    """A process-wide unique name for a PyroModule.

    Pyro registers the parameters of a PyroModule in the global param store under
    ``name.attribute``; two instances with the same name would silently share parameters
    there. A unique name per instance keeps each module the owner of its own parameters.
    """
    return f"{prefix}_{next(_instance_counter)}"


class LatentVariableModel(PyroModule):
    """Base class: p(x) = integral of p(z) p(x given z) dz, one latent ``"z"`` per data point.

    ``binary_data = True`` in a subclass makes :meth:`checked_data` refuse non-binary x.

    :param int data_dim: D, the number of columns of ``x``.
    :param int latent_dim: k, the size of one latent (the number of components for a mixture).
    """

    binary_data = False

    def __init__(self, data_dim: int, latent_dim: int) -> None:
        data_dim = check_positive_int("data_dim", data_dim)
        latent_dim = check_positive_int("latent_dim", latent_dim)
        super().__init__(name=unique_pyro_name(type(self).__name__))
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        # Follows .to(dtype) / .double() so the prior matches the parameters' dtype.
        self.register_buffer("_origin", torch.zeros(()))

    def prior(self) -> torch.distributions.Distribution:
        """p(z) = N(0, I_k) with batch shape (); the data plate broadcasts it to (N,)."""
        return dist.Normal(self._zeros(self.latent_dim), 1.0).to_event(1)

    def likelihood(self, z: torch.Tensor) -> torch.distributions.Distribution:
        """p(x given z): event shape (D,), batch shape ``z``'s batch shape."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor | None = None, *, num_data: int | None = None
    ) -> torch.Tensor:
        """Run the generative program; observe ``x`` (N, D) or, with ``x=None``, sample it.

        :param x: data of shape (N, D), or None to draw ``num_data`` points (default 1).
        :returns: the observed or sampled data, shape (N, D).
        """
        if x is not None:
            x = self.checked_data(x)
        size = x.shape[0] if x is not None else (num_data or 1)
        with pyro.plate("data", size):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.likelihood(z), obs=x)

    def checked_data(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, D) in the model's dtype, after checking it has D = ``data_dim`` columns
        (and, for a model of binary data, only 0s and 1s).

        :raises ValueError: naming the mismatch.
        """
        # Checked whatever Pyro's validation says: these are the library's checks of its
        # arguments, not Pyro's distribution checks.
        if x.dim() != 2:
            raise ValueError(
                f"x must be 2-D (N, D) for {type(self).__name__}; got shape {tuple(x.shape)}"
            )
        check_columns(x, self.data_dim, self)
        if self.binary_data and not bool(((x == 0) | (x == 1)).all()):
            example = x[(x != 0) & (x != 1)][0].item()
            raise ValueError(
                f"x must be binary (0 or 1) for {type(self).__name__}; it holds {example:.4g}"
            )
        return x.to(self._origin.dtype)

    @torch.no_grad()
    def sample(self, num_data: int) -> torch.Tensor:
        """Draw ``num_data`` points from p(x): a tensor of shape (num_data, D)."""
        return self(num_data=check_positive_int("num_data", num_data))

    def _zeros(self, *shape: int) -> torch.Tensor:
        return self._origin.new_zeros(shape)


def check_columns(x: torch.Tensor, data_dim: int, owner: object) -> None:
    """x (N, D) must have D = ``data_dim`` columns, the number ``owner`` was built for."""
    if x.shape[-1] != data_dim:
        raise ValueError(
            f"x has {x.shape[-1]} columns but this {type(owner).__name__} was built for "
            f"data_dim={data_dim}"
        )


def check_positive_int(name: str, value: object) -> int:
    """An integer >= 1 (a size, a count: dimensions, components, points, samples), returned
    as a Python ``int``. NumPy integers are integers; bools, floats and strings are not.

    :raises ValueError: naming ``name``, what it must be and what came.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


MAX_SEED = 2**63 - 1  # torch.manual_seed takes seeds up to this


def check_seed(seed: object, name: str = "seed") -> int | None:
    """None, or an integer in [0, 2**63 - 1] (torch's range)."""
    if seed is None:
        return None
    if (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed <= MAX_SEED
    ):
        raise ValueError(f"{name} must be None or an integer in [0, 2**63 - 1]; got {seed!r}")
    return int(seed)


def seed_32(seed: int) -> int:
    """The 32-bit seed torch's CPU generator (and NumPy's) really uses: ``seed`` itself below
    2**32, a hash of it above, so seeds that differ only above bit 32 (which torch would
    truncate to the same stream) still give different streams."""
    if seed < 2**32:
        return seed
    return int(np.random.SeedSequence(seed).generate_state(1)[0])


@contextmanager
def forked_rng() -> Iterator[None]:
    """``torch.random.fork_rng`` over the CPU RNG and every CUDA device's: draws made in the
    block, on any device, leave the caller's streams as they were. Before CUDA is initialised
    no CUDA tensor exists to draw for, and its RNGs are left alone (not initialised)."""
    in_use = torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if in_use else []):
        yield


def rng_state(device: torch.device) -> tuple[torch.Tensor, ...]:
    """The state of the RNGs a program on ``device`` draws from: the CPU's, and the device's
    own where it is a CUDA device (Pyro draws a CUDA tensor's noise from that one)."""
    if device.type == "cuda":
        return torch.get_rng_state(), torch.cuda.get_rng_state(device)
    return (torch.get_rng_state(),)


def set_rng_state(state: tuple[torch.Tensor, ...], device: torch.device) -> None:
    """Put back what :func:`rng_state` took for ``device``."""
    torch.set_rng_state(state[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[1], device)


def parameter_matrix(name: str, value: object, layout: str) -> torch.Tensor:
    """``value`` as a 2-D floating tensor (integers become float64), for ``from_params``.

    :raises ValueError: naming ``name`` and its ``layout`` (e.g. "(D, k)") when not 2-D.
    """
    tensor = torch.as_tensor(value)
    if not tensor.is_floating_point():
        tensor = tensor.double()
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D {layout}; got shape {tuple(tensor.shape)}")
    return tensor


def parameter_of_shape(
    name: str,
    value: object,
    shapes: tuple[tuple[int, ...], ...],
    dtype: torch.dtype,
    device: torch.device | None = None,
) -> torch.Tensor:
    """``value`` as a tensor of ``dtype`` on ``device`` whose shape is one of ``shapes``.

    :raises ValueError: naming ``name``, the shapes it may have and the one it has.
    """
    tensor = torch.as_tensor(value, dtype=dtype, device=device)
    if tensor.shape not in shapes:
        expected = " or ".join(str(shape) if shape else "a scalar" for shape in shapes)
        raise ValueError(f"{name} must have shape {expected}; got {tuple(tensor.shape)}")
    return tensor


def check_scales(name: str, scales: torch.Tensor) -> torch.Tensor:
    """Standard deviations: every one positive and finite.

    :raises ValueError: naming ``name`` otherwise.
    """
    if not bool(((scales > 0) & torch.isfinite(scales)).all()):
        raise ValueError(f"{name} must be positive and finite (standard deviations)")
    return scales
