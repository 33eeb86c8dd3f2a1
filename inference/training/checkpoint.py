"""Checkpoints of a training run: parameters, optimiser state, step and RNG states.

A checkpoint is a plain dict of tensors, numbers and strings written with ``torch.save`` and read
back with ``torch.load(..., weights_only=True)``, so loading one never runs code. The state is
serialised once into bytes and stored with their SHA-256: torch does not check its zip's CRCs,
so a damaged file is refused by the checksum rather than loaded with altered numbers. Writes are
atomic (a temporary file in the same folder, then ``os.replace``): an interrupted run leaves the
previous checkpoint intact. The whole file is validated (every field, the RNG states) before a
resume touches any state.

:func:`~inference.fit` holds one :class:`Checkpointer` (where and how often to save, the path
checked before training; resuming) and one :class:`LiveRun` (the live objects that a
checkpoint is taken of and restored into).

Parameters are keyed by where they live, not by their param-store names (those carry a
per-process instance counter): ``model.<name>`` / ``guide.<name>`` for the parameters of a model
or guide that is a ``torch.nn.Module`` (its ``named_parameters``), and the param-store name for
parameters a plain function declares with ``pyro.param`` or ``pyro.module``.
"""

from __future__ import annotations

import hashlib
import io
import numbers
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch

from inference._programs import Inputs
from inference._validate import check_output_path

FORMAT = "lvm-suite fit checkpoint"
VERSION = 2


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, not written by :func:`~inference.fit`, or
    for a different model and guide."""


@dataclass
class TrainingState:
    """Everything :func:`~inference.fit` needs to continue a run exactly where it stopped.

    :ivar step: steps completed.
    :ivar parameters: key -> unconstrained value of every trained parameter.
    :ivar optimizer: key -> that parameter's optimiser state (``PyroOptim`` format).
    :ivar rng_state: torch's CPU RNG state after ``step`` steps.
    :ivar batch_rng_state: the minibatch generator's state, or None for full-batch training.
    :ivar losses: the loss of each completed step, nats per data point.
    :ivar logged: the history's periodic records (beta, rate, distortion and their steps).
    :ivar options: the training options, checked on resume.
    :ivar info: free-form metadata of the caller (the command line stores its arguments).
    :ivar cuda_rng_state: the RNG state of the CUDA device the run trains on (where Pyro
        draws a CUDA tensor's noise), or None on the CPU; absent from older checkpoints.
    """

    step: int
    parameters: dict[str, torch.Tensor]
    optimizer: dict[str, dict]
    rng_state: torch.Tensor
    batch_rng_state: torch.Tensor | None
    losses: list[float]
    logged: dict[str, list]
    options: dict[str, object]
    info: dict[str, object] = field(default_factory=dict)
    cuda_rng_state: torch.Tensor | None = None


_OPTIONAL_FIELDS = ("cuda_rng_state",)  # added within format version 2: may be missing


def parameter_keys(
    model: Callable, guide: Callable, params: Iterable[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Stable keys of the trained parameters ``params`` (the unconstrained tensors SVI steps)."""
    by_identity = {}
    for role, program in (("model", model), ("guide", guide)):
        if isinstance(program, torch.nn.Module):
            for name, param in program.named_parameters(prefix=role):
                by_identity.setdefault(id(param), name)
    store = pyro.get_param_store()
    return {by_identity.get(id(p)) or store.param_name(p): p for p in params}


def save_checkpoint(path: str | Path, state: TrainingState) -> None:
    """Write ``state`` to ``path`` atomically, with the SHA-256 of its serialised bytes."""
    write_sealed(Path(path), dict(state.__dict__), FORMAT, VERSION)


def write_sealed(path: Path, fields: dict, format: str, version: int) -> None:
    """Write ``fields`` (tensors, numbers, strings) to ``path`` as one torch file that carries
    its ``format``, ``version`` and the SHA-256 of the serialised fields, atomically: a
    temporary file in the same folder, flushed to disk, then ``os.replace``. Checkpoints and
    saved runs (:func:`inference.studies.runs.save_run`) are written this way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = io.BytesIO()
    torch.save(fields, body)
    payload = {
        "format": format,
        "version": version,
        "sha256": hashlib.sha256(body.getvalue()).hexdigest(),
        "body": body.getvalue(),
    }
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def sealed_body(
    payload: dict, path: Path, version: int, kind: str, error: type[Exception]
) -> bytes:
    """The serialised fields of a file :func:`write_sealed` wrote, once its ``version`` is the
    one this lvm-suite reads and its bytes match their SHA-256; otherwise ``error`` naming
    the ``kind`` of file ("checkpoint", "run") and what is wrong."""
    if payload.get("version") != version:
        raise error(
            f"{kind} {str(path)!r} has format version {payload.get('version')!r}; "
            f"this lvm-suite reads version {version}"
        )
    body = payload.get("body")
    if not isinstance(body, bytes) or hashlib.sha256(body).hexdigest() != payload.get("sha256"):
        raise error(f"{kind} {str(path)!r} is damaged: its contents do not match their checksum")
    return body


def check_checkpoint_path(path: object) -> Path:
    """A path fit can write its checkpoint to, checked before the first step
    (:func:`~inference._validate.check_output_path`)."""
    return check_output_path("checkpoint", path)


def load_checkpoint(path: str | Path) -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint`, and check all of it.

    :raises CheckpointError: when the file is missing, unreadable, damaged (checksum) or
        incomplete, or was not written by lvm-suite's ``fit``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    payload = _load_torch(path, path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a checkpoint written by lvm-suite's fit")
    body = sealed_body(payload, path, VERSION, "checkpoint", CheckpointError)
    fields = _load_torch(io.BytesIO(body), path)
    names = TrainingState.__dataclass_fields__
    missing = [n for n in names if n not in fields and n not in _OPTIONAL_FIELDS]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete: no {missing}")
    state = TrainingState(**{name: fields[name] for name in names if name in fields})
    _check_fields(state, path)
    return state


def _load_torch(source: Path | io.BytesIO, path: Path) -> object:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a torch file: {first_line}"
        ) from None


def _check_fields(state: TrainingState, path: Path) -> None:
    """Every field of the right kind, and RNG states a generator accepts."""
    problems = []
    if isinstance(state.step, bool) or not isinstance(state.step, int) or state.step < 0:
        problems.append(f"step {state.step!r}")
    for name in ("parameters", "optimizer", "logged", "options", "info"):
        if not isinstance(getattr(state, name), dict):
            problems.append(f"{name} is not a dict")
    if not isinstance(state.losses, list) or len(state.losses) != state.step:
        problems.append("losses do not match the step")
    for name in ("rng_state", "batch_rng_state"):
        value = getattr(state, name)
        if value is None and name == "batch_rng_state":
            continue
        try:
            torch.Generator().set_state(value)
        except (TypeError, RuntimeError):
            problems.append(f"{name} is not a torch RNG state")
    cuda_state = state.cuda_rng_state
    if cuda_state is not None and not (
        isinstance(cuda_state, torch.Tensor) and cuda_state.dtype == torch.uint8
    ):
        problems.append("cuda_rng_state is not a torch RNG state")
    if problems:
        raise CheckpointError(f"checkpoint {str(path)!r} is invalid: {'; '.join(problems)}")


def plain(value: object) -> object:
    """Options, metadata and optimiser settings as plain Python values, which a weights-only
    load accepts: NumPy scalars become numbers, paths strings, tensors stay, containers are
    converted throughout."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (bool, str, torch.Tensor)) or value is None:
        return value
    if isinstance(value, numbers.Integral):  # NumPy integers too (np.float64 is a float)
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


def check_same_parameters(state: TrainingState, live: dict[str, torch.Tensor]) -> None:
    """The checkpoint must hold exactly the live parameters, with the same shapes.

    :raises CheckpointError: naming the missing, unexpected or reshaped parameters.
    """
    missing = sorted(set(live) - set(state.parameters))
    unexpected = sorted(set(state.parameters) - set(live))
    if missing or unexpected:
        raise CheckpointError(
            "the checkpoint is for another model or guide: "
            f"parameters missing from it {missing}, not in this pair {unexpected}"
        )
    reshaped = [
        f"{key} {tuple(state.parameters[key].shape)} vs {tuple(param.shape)}"
        for key, param in live.items()
        if state.parameters[key].shape != param.shape
    ]
    if reshaped:
        raise CheckpointError(f"the checkpoint's parameters have other shapes: {reshaped}")


@dataclass(frozen=True)
class LiveRun:
    """The live objects of a run in progress, which a checkpoint is taken of and a resumption
    restores (their saved counterpart is :class:`TrainingState`).

    :ivar parameters: key (:func:`parameter_keys`) -> the unconstrained tensor SVI steps.
    :ivar optimizer: the ``PyroOptim`` stepping them.
    :ivar batch_generator: the minibatch generator, or None for full-batch training.
    :ivar options: what must not change between the run and its resumption
        (:func:`data_fingerprint` among them).
    :ivar device: the data's device, whose RNG a CUDA run draws from.
    """

    parameters: dict[str, torch.Tensor]
    optimizer: pyro.optim.PyroOptim
    batch_generator: torch.Generator | None
    options: dict[str, object]
    device: torch.device = torch.device("cpu")


class Checkpointer:
    """Where and when :func:`~inference.fit` saves its run, and how it resumes one.

    ``path`` is checked when the checkpointer is made, before any training. A checkpoint is
    written atomically (:func:`save_checkpoint`) after every ``every``-th step (0 or None:
    none in between) and after step ``steps``, the last. ``info`` is stored with it.
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        every: int | None,
        steps: int,
        info: dict[str, object] | None = None,
    ) -> None:
        if path is not None:
            check_checkpoint_path(path)
        self.path, self.every, self.steps, self.info = path, every, steps, info

    def resume(self, path: str | Path | None, run: LiveRun) -> TrainingState | None:
        """Put ``run`` where the checkpoint at ``path`` left it, once all of the checkpoint is
        checked (its file, its parameters, its options); None, touching nothing, for no path.

        :raises CheckpointError: for a checkpoint that cannot be used (:func:`load_checkpoint`,
            :func:`restore_state`).
        :raises ValueError: when the checkpoint is past ``steps``.
        """
        if path is None:
            return None
        state = load_checkpoint(path)
        if state.step > self.steps:
            raise ValueError(f"steps ({self.steps}) is below the checkpoint's step ({state.step})")
        restore_state(state, run)
        return state

    def after_step(
        self, done: int, run: LiveRun, losses: list[float], logged: dict[str, list]
    ) -> None:
        """Save the run after ``done`` steps, with its history so far, when a save is due."""
        due = done == self.steps or (self.every and done % self.every == 0)
        if self.path is not None and due:
            save_checkpoint(self.path, capture_state(done, run, losses, logged, self.info))


def capture_state(
    step: int,
    run: LiveRun,
    losses: list[float],
    logged: dict[str, list],
    info: dict[str, object] | None = None,
) -> TrainingState:
    """The state of a run after ``step`` steps, keyed by :func:`parameter_keys`."""
    store = pyro.get_param_store()
    optimizer_state = run.optimizer.get_state()
    by_name = {store.param_name(param): key for key, param in run.parameters.items()}
    return TrainingState(
        step=step,
        parameters={key: param.detach().clone() for key, param in run.parameters.items()},
        optimizer=plain(
            {by_name[name]: state for name, state in optimizer_state.items() if name in by_name}
        ),
        rng_state=torch.get_rng_state(),
        batch_rng_state=None if run.batch_generator is None else run.batch_generator.get_state(),
        losses=plain(list(losses)),
        logged=plain({name: list(values) for name, values in logged.items()}),
        options=plain(dict(run.options)),
        info=plain(dict(info or {})),
        cuda_rng_state=(
            torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None
        ),
    )


def restore_state(state: TrainingState, run: LiveRun) -> None:
    """Put a run back where ``state`` left it: parameters, optimiser, RNGs (a CUDA device's
    where the checkpoint has its state and the run trains there).

    :raises CheckpointError: when the parameters or the training options differ.
    """
    check_same_parameters(state, run.parameters)
    # Both ways: an option only recorded where it departs from the default (IWAE's DReG
    # gradient, aggressive training) must also be refused when the resumption drops it.
    now = plain(run.options)
    differing = {
        name: {"checkpoint": state.options.get(name), "now": now.get(name)}
        for name in dict.fromkeys([*state.options, *now])
        if state.options.get(name) != now.get(name)
    }
    if differing:
        raise CheckpointError(
            f"the checkpoint was written with other training options: {differing}"
        )
    with torch.no_grad():
        for key, param in run.parameters.items():
            param.copy_(state.parameters[key])
    store = pyro.get_param_store()
    run.optimizer.set_state(
        {store.param_name(run.parameters[key]): saved for key, saved in state.optimizer.items()}
    )
    torch.set_rng_state(state.rng_state)
    if run.device.type == "cuda" and state.cuda_rng_state is not None:
        torch.cuda.set_rng_state(state.cuda_rng_state, run.device)
    if run.batch_generator is not None:
        run.batch_generator.set_state(state.batch_rng_state)


def data_fingerprint(inputs: Inputs) -> dict[str, object]:
    """The data (with the programs' extra arguments) as a resumption checks it: the shape of
    x, and the SHA-256 of the bytes of x and of every tensor among the extra arguments."""
    digest = hashlib.sha256()
    values = [inputs.x, *inputs.args, *(inputs.kwargs[k] for k in sorted(inputs.kwargs))]
    for value in values:
        if isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return {"data_shape": list(inputs.x.shape), "data_sha256": digest.hexdigest()}


def optimizer_name(optimizer: pyro.optim.PyroOptim) -> str:
    """The torch optimiser behind a ``PyroOptim`` (a run's state belongs to it)."""
    constructor = getattr(optimizer, "pt_optim_constructor", None)
    return getattr(constructor, "__name__", type(optimizer).__name__)
