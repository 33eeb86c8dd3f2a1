"""Saved runs: a trained model and guide in one file, with the spec that rebuilds them.

A run file holds weights-only state dicts (``model.state_dict()``, ``guide.state_dict()``) and
a :class:`RunSpec`: the registry names of the model and the guide
(:mod:`inference.studies.registry`), their sizes, the training options and the data it was
trained on (a built-in name or a file path, the split rule, and the fingerprint of the rows
trained on). :func:`load_run` rebuilds both modules from the registry and loads the state
dicts; the file is read with ``torch.load(weights_only=True)``, so loading a run never
unpickles code, and a model that the registry cannot rebuild is refused when it is saved.
Like a checkpoint, the contents are stored with their SHA-256 and written atomically.

:func:`load_run` also reads a checkpoint of ``fit`` whose ``checkpoint_info`` names the
registry pair (``lvm fit --checkpoint`` writes such checkpoints).

Usage::

    spec = RunSpec.of("ppca", "amortized-gaussian", 2, data, seed=0)
    save_run("run.pt", model, guide, spec)
    model, guide, spec = load_run("run.pt")
    train, held_out = run_data(spec)
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pyro.nn import PyroModule

from inference._programs import Inputs
from inference._validate import check_output_path
from inference.studies.registry import GUIDES, MODELS, lookup
from inference.training.checkpoint import (
    FORMAT as CHECKPOINT_FORMAT,
)
from inference.training.checkpoint import (
    check_same_parameters,
    data_fingerprint,
    load_checkpoint,
    parameter_keys,
    plain,
    sealed_body,
    write_sealed,
)
from lvm_models import datasets

FORMAT = "lvm-suite run"
VERSION = 1


class RunError(ValueError):
    """A run that cannot be saved or loaded: a pair the registry does not build, a file that
    is missing, damaged or not a run, or data that changed since training."""


@dataclass(frozen=True)
class RunSpec:
    """What rebuilds a trained pair and the data it was trained on.

    :ivar model: a name in :data:`~inference.studies.registry.MODELS`.
    :ivar guide: a name in :data:`~inference.studies.registry.GUIDES`.
    :ivar latent_dim: k (components for a mixture).
    :ivar data: a built-in data set's name, or the path of a data file
        (:func:`~lvm_models.datasets.from_file`).
    :ivar seed: seeds the built-in data set, the split and training.
    :ivar data_shape: (N, D) of the rows trained on; D and N size the model and the guide.
    :ivar data_sha256: the SHA-256 of those rows (float32 bytes,
        :func:`~inference.training.checkpoint.data_fingerprint`).
    :ivar data_key: the array of an ``.npz`` (or dict ``.pt``) data file, or None.
    :ivar test_fraction: the share held out by ``datasets.split(data, test_fraction,
        seed=seed)``; 0 when training used every row.
    :ivar options: the training options (steps, batch_size, lr, objective, ...), a record.
    """

    model: str
    guide: str
    latent_dim: int
    data: str
    seed: int
    data_shape: tuple[int, ...]
    data_sha256: str
    data_key: str | None = None
    test_fraction: float = 0.0
    options: dict = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        model: str,
        guide: str,
        latent_dim: int,
        trained_on: datasets.Dataset,
        *,
        seed: int,
        data_key: str | None = None,
        test_fraction: float = 0.0,
        options: dict | None = None,
    ) -> RunSpec:
        """The spec of a pair trained on ``trained_on`` (the training rows, after any split;
        its ``name`` is the built-in name or the file's path, stored absolute so that the run
        can be evaluated from another folder)."""
        fingerprint = data_fingerprint(Inputs(trained_on.x))
        data = trained_on.name
        if data not in datasets.DATASETS and Path(data).is_file():
            data = str(Path(data).absolute())
        return cls(
            model=model,
            guide=guide,
            latent_dim=latent_dim,
            data=data,
            seed=seed,
            data_shape=tuple(fingerprint["data_shape"]),
            data_sha256=fingerprint["data_sha256"],
            data_key=data_key,
            test_fraction=test_fraction,
            options=dict(options or {}),
        )

    def to_dict(self) -> dict:
        """The fields as plain Python values, ready for JSON and a weights-only file."""
        return plain(dataclasses.asdict(self))


def save_run(path: str | Path, model: PyroModule, guide: PyroModule, spec: RunSpec) -> Path:
    """Write a trained pair and its spec to ``path`` (atomically), to evaluate it later.

    :raises TypeError: for a spec that is not a :class:`RunSpec`.
    :raises RunError: when the registry entries the spec names do not rebuild this pair (an
        unknown name, another class, other parameter names or shapes).
    :returns: ``path`` as a Path.
    """
    path = check_output_path("path", path)
    if not isinstance(spec, RunSpec):
        raise TypeError(f"spec must be a RunSpec; got {type(spec).__name__}")
    rebuilt_model, rebuilt_guide = _rebuilt(spec, "save")
    for role, trained, rebuilt in (
        ("model", model, rebuilt_model),
        ("guide", guide, rebuilt_guide),
    ):
        _check_rebuilds(role, getattr(spec, role), trained, rebuilt)
    fields = {"spec": spec.to_dict(), "model": _cpu_state(model), "guide": _cpu_state(guide)}
    write_sealed(path, fields, FORMAT, VERSION)
    return path


def load_run(path: str | Path) -> tuple[PyroModule, PyroModule, RunSpec]:
    """The model, guide and spec saved by :func:`save_run` (or in a checkpoint of ``fit``
    whose info names a registry pair), rebuilt from the registry with the saved parameters.

    Nothing but tensors, numbers and strings is read (``torch.load(weights_only=True)``), and
    the global random state is left as it was.

    :raises RunError: for a missing, damaged or foreign file, or a spec the registry cannot
        rebuild.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"run {str(path)!r} does not exist")
    payload = _load_torch(path, path)
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return _from_checkpoint(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RunError(
            f"{str(path)!r} is not a run saved by lvm-suite (`lvm fit --save`, save_run) "
            "nor a checkpoint of fit"
        )
    body = sealed_body(payload, path, VERSION, "run", RunError)
    stored = _load_torch(io.BytesIO(body), path)
    spec = _spec_from(stored.get("spec") if isinstance(stored, dict) else None, path)
    model, guide = _rebuilt(spec, "load")
    for role, module in (("model", model), ("guide", guide)):
        try:
            module.load_state_dict(stored[role])
        except (KeyError, TypeError, RuntimeError) as error:
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            message = f"run {str(path)!r}: the saved {role} does not fit: {first_line}"
            raise RunError(message) from None
    return model, guide, spec


def load_data(
    source: str, *, seed: int, key: str | None = None, test_fraction: float = 0.0
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """A built-in data set by name, or a data file by path, and its held-out rows.

    ``source`` is a file when it is not a built-in name and ends with one of
    :data:`~lvm_models.datasets.FILE_FORMATS`.

    :returns: ``(train, held_out)``: with ``test_fraction`` > 0 the split of
        :func:`~lvm_models.datasets.split`, else all rows and None.
    """
    if source not in datasets.DATASETS and Path(source).suffix.lower() in datasets.FILE_FORMATS:
        data = datasets.from_file(source, key=key)
    elif key is not None:
        raise ValueError(f"a data key ({key!r}) picks an array of a data file; {source!r} is not")
    else:
        data = datasets.load(source, seed=seed)
    if not test_fraction:
        return data, None
    return datasets.split(data, test_fraction, seed=seed)


def run_data(spec: RunSpec) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """The data a run was trained on, loaded again, and its held-out rows (or None).

    :raises RunError: when the rows differ from those trained on (a data file changed).
    """
    train, held_out = load_data(
        spec.data, seed=spec.seed, key=spec.data_key, test_fraction=spec.test_fraction
    )
    fingerprint = data_fingerprint(Inputs(train.x))
    if fingerprint["data_sha256"] != spec.data_sha256:
        raise RunError(
            f"the data {spec.data!r} differ from those the run was trained on (shape "
            f"{tuple(fingerprint['data_shape'])} now, {tuple(spec.data_shape)} then, and "
            "another SHA-256): evaluate on a file with --eval-data"
        )
    return train, held_out


def _rebuilt(spec: RunSpec, action: str) -> tuple[PyroModule, PyroModule]:
    """A fresh model and guide from the registry entries the spec names, sized by it.

    Built under a forked RNG: initialising them leaves the global random state as it was.
    """
    try:
        model_entry = lookup("model", MODELS, spec.model)
        guide_entry = lookup("guide", GUIDES, spec.guide)
    except ValueError as error:
        raise RunError(f"cannot {action} a run the registry does not build: {error}") from None
    num_data, data_dim = spec.data_shape
    with torch.random.fork_rng(devices=[]):
        model = model_entry.build(data_dim, spec.latent_dim)
        return model, guide_entry.build(model, num_data)


def _check_rebuilds(role: str, name: str, trained: object, rebuilt: PyroModule) -> None:
    """``trained`` must be what registry entry ``name`` builds: its class, its parameters."""
    if type(trained) is not type(rebuilt):
        raise RunError(
            f"cannot save a {role} the registry does not build: {role} {name!r} is a "
            f"{type(rebuilt).__name__}, got a {type(trained).__name__}"
        )
    expected = {key: tuple(value.shape) for key, value in rebuilt.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in trained.state_dict().items()}
    if expected != found:
        differing = sorted(set(expected.items()) ^ set(found.items()))
        raise RunError(
            f"cannot save this {role}: registry entry {name!r} with the spec's sizes builds "
            f"other parameters ({differing[:4]} differ)"
        )


def _cpu_state(module: PyroModule) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu() for key, value in module.state_dict().items()}


def _from_checkpoint(path: Path) -> tuple[PyroModule, PyroModule, RunSpec]:
    """The pair a checkpoint of ``fit`` holds, where its info names the registry pair."""
    state = load_checkpoint(path)
    needed = ("model", "guide", "latent_dim", "data", "seed")
    missing = [name for name in needed if name not in state.info]
    if missing:
        raise RunError(
            f"checkpoint {str(path)!r} does not name a registry pair (no {missing} in its "
            "info): it was not written by `lvm fit`"
        )
    spec_fields = {f.name for f in dataclasses.fields(RunSpec)}
    named = {k: v for k, v in state.info.items() if k in spec_fields}
    options = {k: v for k, v in state.info.items() if k not in spec_fields}
    spec = RunSpec(
        **named,
        data_shape=tuple(state.options["data_shape"]),
        data_sha256=state.options["data_sha256"],
        options=options | {"steps": state.step},  # the steps taken, not the steps planned
    )
    model, guide = _rebuilt(spec, "load")
    unique = {id(p): p for module in (model, guide) for p in module.parameters()}
    live = parameter_keys(model, guide, unique.values())
    check_same_parameters(state, live)
    with torch.no_grad():
        for key, param in live.items():
            param.copy_(state.parameters[key])
    return model, guide, spec


def _spec_from(stored: object, path: Path) -> RunSpec:
    """The spec of a run file, every field checked."""
    names = {f.name: f for f in dataclasses.fields(RunSpec)}
    if not isinstance(stored, dict) or set(stored) - set(names):
        raise RunError(f"run {str(path)!r} is invalid: its spec is not a RunSpec")
    try:
        spec = RunSpec(**{**stored, "data_shape": tuple(stored.get("data_shape", ()))})
    except TypeError as error:
        raise RunError(f"run {str(path)!r} is invalid: {error}") from None
    kinds = {
        "model": str,
        "guide": str,
        "latent_dim": int,
        "data": str,
        "seed": int,
        "data_sha256": str,
        "data_key": (str, type(None)),
        "test_fraction": (int, float),
        "options": dict,
    }
    wrong = [name for name, kind in kinds.items() if not isinstance(getattr(spec, name), kind)]
    if len(spec.data_shape) != 2 or not all(isinstance(n, int) for n in spec.data_shape):
        wrong.append("data_shape")
    if wrong:
        raise RunError(f"run {str(path)!r} is invalid: bad {wrong} in its spec")
    return spec


def _load_torch(source: Path | io.BytesIO, path: Path) -> object:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        if "Weights only load failed" in str(error):
            raise RunError(
                f"{str(path)!r} is not a run saved by lvm-suite: it holds objects that only "
                "unpickling code would load, and a run is loaded without unpickling code"
            ) from None
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunError(f"run {str(path)!r} is corrupt or not a torch file: {first_line}") from None
