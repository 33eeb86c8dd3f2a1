"""Seeded, offline data sets with a known (or reference) density.

Every loader takes ``seed`` and returns a :class:`Dataset` whose ``x`` is a float32 tensor of
shape (N, D); the same seed gives the identical tensor. For the synthetic Gaussians the seed fixes
both the parameters of the distribution and the draws from it, so a different seed gives a
different distribution as well as different points. Randomness comes from a local
``torch.Generator`` (scikit-learn's ``random_state`` for the moons), never from a global random
state. Nothing is downloaded: the digits are scikit-learn's bundled copy of the UCI handwritten
digits, :func:`sklearn.datasets.load_digits` (1797 images of 8 x 8 pixels, integers 0..16).

A researcher's own data comes from a file with :func:`from_file` (``.npy``, ``.npz``, ``.csv``,
``.pt``), checked once, into the same :class:`Dataset`; :func:`split` holds out a seeded part of
any data set for evaluation.

Usage::

    data = load("correlated-gaussian", seed=1, num_data=500)
    data.x.shape                       # torch.Size([500, 8])
    data.log_density(data.x).mean()    # average exact log p_data(x), nats
    mine = from_file("my_data.npy")    # (N, ...) -> x of shape (N, D)
    train, test = split(mine, 0.2, seed=0)
"""

from __future__ import annotations

import csv
import dataclasses
import math
import numbers
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)

from lvm_models._base import check_seed, seed_32

LogDensity = Callable[[torch.Tensor], torch.Tensor]

_DIGIT_LEVELS = 17  # load_digits pixels are the integers 0..16
# Keeps dequantised values at least this far (in pixel units) inside their bin, so that float32
# rounding never yields exactly 0 or 1 nor moves a value into the neighbouring bin.
_DEQUANTIZATION_MARGIN = 1e-5
_MIXTURE_SEPARATION = 4.0  # minimum distance between component means: >= 8 component stds


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set and, where known, the exact density it was drawn from.

    :param name: registry name, e.g. ``"correlated-gaussian"``.
    :param x: (N, D) float32 data.
    :param description: one line for tables and ``lvm list``.
    :param binary: True when every entry of ``x`` is 0 or 1.
    :param log_density: exact log p_data in nats of the distribution the data were drawn from,
        per point: an (M, D) tensor to an (M,) float64 tensor, computed in float64; None when
        unknown.
    """

    name: str
    x: torch.Tensor
    description: str
    binary: bool = False
    log_density: LogDensity | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.x.dtype != torch.float32:
            raise ValueError(
                "x must be a 2-D float32 tensor (N, D); "
                f"got shape {tuple(self.x.shape)}, dtype {self.x.dtype}"
            )


def _check_at_least(name: str, value: float, minimum: float) -> None:
    """``value >= minimum``; an integer where ``minimum`` is one (a count, not a bool)."""
    if isinstance(minimum, int):
        integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not integral or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    elif not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= minimum):
        raise ValueError(f"{name} must be a finite number >= {minimum}; got {value!r}")


def _data_seed(seed: object) -> int:
    """A data set's seed: an integer in [0, 2**63 - 1], as 32 bits (:func:`seed_32`)."""
    if seed is None:
        raise ValueError("seed must be an integer in [0, 2**63 - 1] for a data set; got None")
    return seed_32(check_seed(seed))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(_data_seed(seed))


def _uniform(
    low: float, high: float, shape: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """Float64 draws from Uniform(low, high) of the given shape."""
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def _log_density_of(distribution: Distribution) -> LogDensity:
    """Wrap a float64 torch distribution with event shape (D,) as a checked (M, D) -> (M,) map."""
    data_dim = distribution.event_shape[0]

    def log_density(x: torch.Tensor) -> torch.Tensor:
        """Exact log p_data(x) in nats, float64: (M, D) -> (M,)."""
        if x.ndim != 2 or x.shape[1] != data_dim:
            raise ValueError(f"x must have shape (M, {data_dim}); got {tuple(x.shape)}")
        return distribution.log_prob(x.to(torch.float64))

    return log_density


def _sample_gaussian(
    mean: torch.Tensor, covariance: torch.Tensor, num_data: int, generator: torch.Generator
) -> torch.Tensor:
    """(num_data, D) float64 draws from N(mean, covariance), using only ``generator``."""
    cholesky = torch.linalg.cholesky(covariance)
    noise = torch.randn(num_data, mean.shape[0], generator=generator, dtype=torch.float64)
    return mean + noise @ cholesky.T


def independent_gaussian(num_data: int = 2000, data_dim: int = 8, seed: int = 0) -> Dataset:
    """Draws from N(mu, diag(sigma^2)), mu_d ~ U(-2, 2), sigma_d ~ U(0.5, 2); exact log_density.

    :returns: a Dataset with ``x`` of shape (num_data, data_dim).
    """
    _check_at_least("num_data", num_data, 1)
    _check_at_least("data_dim", data_dim, 1)
    generator = _generator(seed)
    mean = _uniform(-2.0, 2.0, (data_dim,), generator)
    scale = _uniform(0.5, 2.0, (data_dim,), generator)
    x = _sample_gaussian(mean, torch.diag(scale**2), num_data, generator)
    return Dataset(
        name="independent-gaussian",
        x=x.float(),
        description=f"{data_dim}-D Gaussian with independent coordinates, N={num_data}",
        log_density=_log_density_of(Independent(Normal(mean, scale), 1)),
    )


def correlated_gaussian(num_data: int = 2000, data_dim: int = 8, seed: int = 0) -> Dataset:
    """Draws from N(mu, A A^T + diag(psi)) with a (D, 2) loading A: strongly correlated coordinates.

    A's first column is +-U(1, 2) and its second U(-1, 1), so each row lies within 45 degrees of
    the first axis and most pairs of coordinates have |correlation| well above 0.5;
    psi_d ~ U(0.05, 0.1) and mu_d ~ U(-2, 2). log_density is exact.

    :returns: a Dataset with ``x`` of shape (num_data, data_dim).
    """
    _check_at_least("num_data", num_data, 1)
    _check_at_least("data_dim", data_dim, 2)
    generator = _generator(seed)
    mean = _uniform(-2.0, 2.0, (data_dim,), generator)
    signs = torch.randint(0, 2, (data_dim,), generator=generator, dtype=torch.float64) * 2 - 1
    main_factor = signs * _uniform(1.0, 2.0, (data_dim,), generator)
    second_factor = _uniform(-1.0, 1.0, (data_dim,), generator)
    loading = torch.stack([main_factor, second_factor], dim=1)  # (D, 2)
    noise_variance = _uniform(0.05, 0.1, (data_dim,), generator)
    covariance = loading @ loading.T + torch.diag(noise_variance)  # (D, D)
    x = _sample_gaussian(mean, covariance, num_data, generator)
    return Dataset(
        name="correlated-gaussian",
        x=x.float(),
        description=f"{data_dim}-D Gaussian, rank-2-plus-noise covariance, N={num_data}",
        log_density=_log_density_of(MultivariateNormal(mean, covariance_matrix=covariance)),
    )


def _separated_means(
    num_components: int, data_dim: int, generator: torch.Generator
) -> torch.Tensor:
    """(K, D) means uniform in a cube, redrawn until all pairs are _MIXTURE_SEPARATION apart.

    The cube grows by 10% after each rejected draw, so the loop ends for any K and D.
    """
    side = 2 * _MIXTURE_SEPARATION * num_components ** (1 / data_dim)
    # The identity term stops each mean's zero distance to itself from counting.
    self_distance = _MIXTURE_SEPARATION * torch.eye(num_components, dtype=torch.float64)
    while True:
        means = side * (_uniform(0.0, 1.0, (num_components, data_dim), generator) - 0.5)
        if (torch.cdist(means, means) + self_distance).min() >= _MIXTURE_SEPARATION:
            return means
        side *= 1.1


def gaussian_mixture(
    num_data: int = 2000, data_dim: int = 2, num_components: int = 3, seed: int = 0
) -> Dataset:
    """Draws from sum_k w_k N(mu_k, diag(sigma_k^2)), well separated; exact log_density.

    Weights are proportional to U(1, 3) draws; sigma_k,d ~ U(0.2, 0.5); the means are at least
    4 apart, i.e. at least 8 component standard deviations. log_density is the logsumexp over
    components (``torch.distributions.MixtureSameFamily``).

    :returns: a Dataset with ``x`` of shape (num_data, data_dim).
    """
    _check_at_least("num_data", num_data, 1)
    _check_at_least("data_dim", data_dim, 1)
    _check_at_least("num_components", num_components, 1)
    generator = _generator(seed)
    weights = _uniform(1.0, 3.0, (num_components,), generator)
    weights = weights / weights.sum()
    means = _separated_means(num_components, data_dim, generator)  # (K, D)
    scales = _uniform(0.2, 0.5, (num_components, data_dim), generator)  # (K, D)
    components = torch.multinomial(weights, num_data, replacement=True, generator=generator)
    noise = torch.randn(num_data, data_dim, generator=generator, dtype=torch.float64)
    x = means[components] + scales[components] * noise  # (N, D)
    mixture = MixtureSameFamily(Categorical(probs=weights), Independent(Normal(means, scales), 1))
    return Dataset(
        name="gaussian-mixture",
        x=x.float(),
        description=(
            f"{data_dim}-D mixture of {num_components} separated diagonal Gaussians, N={num_data}"
        ),
        log_density=_log_density_of(mixture),
    )


def two_moons(num_data: int = 2000, noise: float = 0.1, seed: int = 0) -> Dataset:
    """scikit-learn's two interleaving half circles, standardised per coordinate.

    ``sklearn.datasets.make_moons(num_data, noise=noise, random_state=seed)``, then each coordinate
    is shifted and scaled to sample mean 0 and (biased) sample variance 1. The density is unknown.

    :returns: a Dataset with ``x`` of shape (num_data, 2).
    """
    _check_at_least("num_data", num_data, 2)
    _check_at_least("noise", noise, 0.0)
    from sklearn.datasets import make_moons  # scikit-learn loads only for the data it makes

    points, _ = make_moons(n_samples=num_data, noise=noise, random_state=_data_seed(seed))
    x = torch.from_numpy(points)
    x = (x - x.mean(0)) / x.std(0, correction=0)
    return Dataset(
        name="two-moons",
        x=x.float(),
        description=f"two moons (noise {noise}), standardised, N={num_data}",
    )


def _digit_pixels() -> torch.Tensor:
    """(1797, 64) float64 integer pixel values 0..16 of scikit-learn's bundled digits."""
    from sklearn.datasets import load_digits

    return torch.from_numpy(load_digits().data)


def binarized_digits(seed: int = 0) -> Dataset:
    """Stochastically binarised digits: x ~ Bernoulli(v / 16) per pixel value v in 0..16.

    :returns: a binary Dataset with ``x`` of shape (1797, 64). The density is unknown.
    """
    generator = _generator(seed)
    pixels = _digit_pixels()
    x = torch.bernoulli(pixels / (_DIGIT_LEVELS - 1), generator=generator)
    return Dataset(
        name="binarized-digits",
        x=x.float(),
        description="8x8 digits (scikit-learn), stochastically binarised, N=1797",
        binary=True,
    )


def dequantized_digits(seed: int = 0) -> Dataset:
    """Uniformly dequantised digits in (0, 1): x = (v + u) / 17, u ~ U(0, 1), v in 0..16.

    This is the standard uniform dequantisation: for any density p on x,
    E_u[log p(x)] - D log 17 is a lower bound on log P(v) of the discrete pixels v
    (the 17^D rescales from x to pixel units). To keep float32 values strictly inside their bin,
    u is drawn from U(delta, 1 - delta) with delta = 1e-5, which lowers that bound by a
    negligible log(1 - 2 delta) per dimension. The density is unknown.

    :returns: a Dataset with ``x`` of shape (1797, 64); floor(17 x) recovers the pixels.
    """
    generator = _generator(seed)
    pixels = _digit_pixels()
    jitter = _uniform(_DEQUANTIZATION_MARGIN, 1 - _DEQUANTIZATION_MARGIN, pixels.shape, generator)
    x = (pixels + jitter) / _DIGIT_LEVELS
    return Dataset(
        name="dequantized-digits",
        x=x.float(),
        description="8x8 digits (scikit-learn), uniformly dequantised to (0, 1), N=1797",
    )


def max_likelihood_gaussian(x: torch.Tensor, covariance: str = "full") -> MultivariateNormal:
    """The Gaussian fitted to x (N, D) by maximum likelihood, in float64.

    mean_hat is the sample mean and Sigma_hat = (1/N) sum_n (x_n - mean_hat)(x_n - mean_hat)^T the
    biased sample covariance, or its diagonal for ``covariance="diagonal"``.

    :raises ValueError: for another ``covariance``, x not 2-D or with fewer than 2 rows, or a
        singular Sigma_hat (a constant column, or collinear columns for ``"full"``).
    """
    if covariance not in ("full", "diagonal"):
        raise ValueError(f"covariance must be 'full' or 'diagonal'; got {covariance!r}")
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be 2-D (N, D) with N >= 2; got shape {tuple(x.shape)}")
    points = x.to(torch.float64)
    mean = points.mean(0)
    centred = points - mean
    sample_covariance = centred.T @ centred / points.shape[0]  # (D, D)
    if covariance == "diagonal":
        sample_covariance = torch.diag(torch.diagonal(sample_covariance))
    cholesky, info = torch.linalg.cholesky_ex(sample_covariance)
    if info.item() > 0:
        raise ValueError(
            "x has a singular sample covariance (a constant or collinear column), "
            "so no maximum-likelihood Gaussian density exists"
        )
    return MultivariateNormal(mean, scale_tril=cholesky)


def gaussian_max_log_likelihood(x: torch.Tensor, covariance: str = "full") -> torch.Tensor:
    """Per-point log N(x_n; mean_hat, Sigma_hat) in nats under the Gaussian fitted to x by ML.

    See :func:`max_likelihood_gaussian`. The mean over points,
    -0.5 * (D log(2 pi) + log det Sigma_hat + D), is the largest average log-likelihood that any
    Gaussian (resp. diagonal Gaussian) reaches on x: an in-sample reference for models that
    contain that family.

    :param x: (N, D) data with N >= 2.
    :param covariance: ``"full"`` or ``"diagonal"``.
    :returns: (N,) float64 tensor.
    """
    return max_likelihood_gaussian(x, covariance).log_prob(x.to(torch.float64))


DATASETS: dict[str, Callable[..., Dataset]] = {
    "independent-gaussian": independent_gaussian,
    "correlated-gaussian": correlated_gaussian,
    "gaussian-mixture": gaussian_mixture,
    "two-moons": two_moons,
    "binarized-digits": binarized_digits,
    "dequantized-digits": dequantized_digits,
}


def load(name: str, *, seed: int = 0, **kwargs: Any) -> Dataset:
    """Call the loader registered under ``name`` in :data:`DATASETS` with ``seed`` and kwargs.

    :raises ValueError: when ``name`` is not registered; the message lists the known names.
    """
    if name not in DATASETS:
        raise ValueError(
            f"unknown data set {name!r}; known: {', '.join(DATASETS)}, or a file ending "
            f"{', '.join(FILE_FORMATS)} (datasets.from_file)"
        )
    return DATASETS[name](seed=seed, **kwargs)


FILE_FORMATS = (".npy", ".npz", ".csv", ".pt")


class DataFileError(ValueError):
    """A data file that cannot be used; the message names the file and what is wrong with it."""


def from_file(path: str | Path, key: str | None = None, binary: bool | None = None) -> Dataset:
    """A researcher's data, an array of shape (N, ...) in a file, checked and as a Dataset.

    The format is the extension's, and reading one never unpickles code:

    - ``.npy``: one array (``numpy.load(allow_pickle=False)``);
    - ``.npz``: named arrays; ``key`` picks one (a file with a single array needs none);
    - ``.csv``: numbers separated by commas, one point per row; a first row without a single
      number is a header;
    - ``.pt``: a tensor, or a dict of tensors that ``key`` picks from
      (``torch.load(weights_only=True)``).

    Booleans and integers become floats. A point with more than one dimension, (N, H, W) say,
    is flattened in row-major order to D = H * W, the (N, D) layout the models take.

    :param path: the file.
    :param key: the array of an ``.npz``, or the entry of a dict saved as ``.pt``.
    :param binary: None: binary when every entry is 0 or 1; True: that is required;
        False: continuous whatever the values.
    :returns: a Dataset named ``str(path)`` with float32 ``x`` of shape (N, D) and no
        ``log_density`` (the density of a researcher's data is unknown).
    :raises DataFileError: for an unknown extension, a missing or unreadable file, an
        ``.npz`` (or dict) of several arrays and no ``key`` (it names them), a CSV cell that is
        not a number (its row and column), fewer than 2 dimensions or N < 2, a dtype that is not
        numeric (object, text, complex), NaN or infinite entries (their count and the first
        index), or non-binary entries with ``binary=True``.
    """
    path = Path(path)
    where = f"data file {str(path)!r}"
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        known = ", ".join(FILE_FORMATS)
        raise DataFileError(f"{where}: unknown extension {path.suffix!r}; known: {known}")
    if binary not in (None, True, False):
        raise TypeError(f"binary must be None, True or False; got {binary!r}")
    if key is not None and suffix not in (".npz", ".pt"):
        raise DataFileError(f"{where}: key={key!r} picks an array of an .npz or .pt file only")
    if not path.is_file():
        raise DataFileError(f"{where} does not exist")
    values = _checked_values(_read(path, suffix, key, where), where)  # (N, ...) float32
    x = values.reshape(values.shape[0], -1)  # (N, D)
    is_binary = bool(((x == 0) | (x == 1)).all())
    if binary and not is_binary:
        index = _first_index((values != 0) & (values != 1))
        raise DataFileError(
            f"{where}: binary=True, but it holds {values[index].item():.4g} at index {index}"
        )
    shown_key = "" if key is None else f" [{key}]"
    return Dataset(
        name=str(path),
        x=x.contiguous(),
        description=f"{x.shape[1]}-D data from {path.name}{shown_key}, N={x.shape[0]}",
        binary=is_binary if binary is None else binary,
    )


def split(data: Dataset, test_fraction: float, *, seed: int) -> tuple[Dataset, Dataset]:
    """Training and held-out rows of ``data``: a seeded split, for log p(x) on unseen data.

    round(test_fraction * N) rows (at least 1, leaving at least 1) are held out: the first
    entries of ``torch.randperm(N)`` drawn from a generator seeded with ``seed``. Both parts
    keep the rows' order; the same data, fraction and seed give the same split.

    :param data: N >= 2 points.
    :param test_fraction: the share held out, in (0, 1).
    :returns: ``(train, held_out)``, Datasets with ``data``'s name, binary flag and density.
    """
    fraction_ok = isinstance(test_fraction, numbers.Real) and not isinstance(test_fraction, bool)
    if not (fraction_ok and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be a number in (0, 1); got {test_fraction!r}")
    num_data = data.x.shape[0]
    if num_data < 2:
        raise ValueError(f"a split needs N >= 2 points; {data.name!r} has {num_data}")
    num_held_out = min(max(round(test_fraction * num_data), 1), num_data - 1)
    order = torch.randperm(num_data, generator=_generator(seed))
    held_out_rows = order[:num_held_out].sort().values
    train_rows = order[num_held_out:].sort().values
    rule = f"test_fraction {test_fraction}, seed {seed}"
    train = dataclasses.replace(
        data,
        x=data.x[train_rows],
        description=f"{data.description}: {num_data - num_held_out} training rows ({rule})",
    )
    held_out = dataclasses.replace(
        data,
        x=data.x[held_out_rows],
        description=f"{data.description}: {num_held_out} held-out rows ({rule})",
    )
    return train, held_out


def _read(path: Path, suffix: str, key: str | None, where: str) -> np.ndarray | torch.Tensor:
    """The array a file holds, as stored; a DataFileError for one that cannot be read."""
    try:
        if suffix == ".csv":
            return _read_csv(path, where)
        if suffix == ".pt":
            return _read_torch(path, key, where)
        stored = np.load(path, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):
            return stored
        with stored:
            return stored[_pick(list(stored.files), key, where)]
    except DataFileError:
        raise
    except (ValueError, OSError, EOFError, RuntimeError, pickle.UnpicklingError) as error:
        if "allow_pickle" in str(error) or "Weights only load failed" in str(error):
            raise DataFileError(
                f"{where} holds Python objects, which only unpickling code would load; "
                "save a numeric array"
            ) from None
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise DataFileError(f"{where} is not a readable {suffix} file: {first_line}") from None


def _read_csv(path: Path, where: str) -> np.ndarray:
    """The numbers of a CSV file (N, D), skipping blank lines and a header row."""
    rows: list[list[float]] = []
    with path.open(newline="") as file:
        reader = csv.reader(file)
        for row in reader:
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            parsed = [_number(cell) for cell in cells]
            if not rows and all(value is None for value in parsed):
                continue  # the header: a first row without a single number
            if None in parsed:
                column = parsed.index(None)
                raise DataFileError(
                    f"{where}: row {reader.line_num}, column {column + 1}: "
                    f"{cells[column]!r} is not a number"
                )
            if rows and len(parsed) != len(rows[0]):
                raise DataFileError(
                    f"{where}: row {reader.line_num} has {len(parsed)} columns; "
                    f"the first row of numbers has {len(rows[0])}"
                )
            rows.append(parsed)
    if not rows:
        raise DataFileError(f"{where} holds no rows of numbers")
    return np.array(rows, dtype=np.float64)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_torch(path: Path, key: str | None, where: str) -> torch.Tensor:
    """The tensor a ``torch.save`` file holds, or the one ``key`` names in a dict of them."""
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(stored, dict):
        tensors = {str(name): value for name, value in stored.items()}
        stored = tensors[_pick(list(tensors), key, where)]
    elif key is not None:
        raise DataFileError(f"{where} holds one {type(stored).__name__}, not a dict: drop key")
    if not isinstance(stored, torch.Tensor):
        raise DataFileError(f"{where} holds a {type(stored).__name__}, not a tensor")
    return stored


def _pick(names: list[str], key: str | None, where: str) -> str:
    """The name of the array to read from a file of named arrays."""
    if key is None and len(names) == 1:
        return names[0]
    if key is None:
        raise DataFileError(
            f"{where} holds {len(names)} arrays ({', '.join(names) or 'none'}); "
            "name one with key= (--data-key)"
        )
    if key not in names:
        raise DataFileError(f"{where} has no array {key!r}; it holds: {', '.join(names)}")
    return key


def _checked_values(values: np.ndarray | torch.Tensor, where: str) -> torch.Tensor:
    """``values`` as a float32 tensor of the same shape (N, ...), once every check passed."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "biuf":
            raise DataFileError(
                f"{where}: dtype {values.dtype} is not numeric (booleans, integers or floats)"
            )
        values = torch.from_numpy(values.astype(np.float64))
    elif values.is_complex():
        raise DataFileError(f"{where}: dtype {values.dtype} is not numeric (complex)")
    if values.ndim < 2 or values.shape[0] < 2 or values[0].numel() == 0:
        raise DataFileError(
            f"{where}: the data must have shape (N, ...) with N >= 2 points of at least one "
            f"dimension; got shape {tuple(values.shape)}"
        )
    values = values.detach().to(torch.float32)  # float64 beyond float32's range becomes inf
    not_finite = ~torch.isfinite(values)
    if not_finite.any():
        raise DataFileError(
            f"{where}: {int(not_finite.sum())} entries are NaN or infinite (in float32); "
            f"the first at index {_first_index(not_finite)}"
        )
    return values


def _first_index(mask: torch.Tensor) -> tuple[int, ...]:
    """The index of the first True entry of ``mask``, in row-major order."""
    return tuple(mask.nonzero()[0].tolist())
