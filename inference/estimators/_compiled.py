"""The log weights of a model and guide, chunk by chunk, compiled with ``torch.compile``.

The log weight of a chunk of particles, log w = log p(x, z) - log q(z given x) of
:func:`~inference._programs.log_importance_weights`, is a pure function of the parameters, the
data and the noise once the programs' trace structure is known. ``torch.compile`` captures it:
TorchDynamo runs Pyro's handlers in Python while it captures, and guards what the capture
assumed (sizes, dtypes, the objects and Python values it read), so a program whose structure
changes (a branch on a drawn value, a site added) is re-captured or run in Python at that
point, never replayed wrongly; TorchInductor compiles the tensor work between (the networks,
their activations and the log-densities, fused). Random ops stay ATen's own
(``fallback_random``), so a compiled chunk draws exactly the numbers of the eager chunk from
torch's RNG. The compiled code is cached by TorchDynamo across calls for the same programs and
shapes.

Each call checks the compiled chunk once before trusting it: the first chunk runs eagerly
(timed), and the second runs compiled and then eagerly from the same RNG state; both must
leave the RNG in the same state and give the same log weights to float round-off (1e-5
relative in float32, 1e-10 in float64), and the eager numbers are the ones used. Where
compiling fails or the check does not hold, the call goes on eagerly, with one
:class:`CompileWarning` (or :class:`CompileError` with ``compile=True``).

Measured on the digits VAE (``benchmarks/iw.py``, 2 threads): a compiled chunk takes about
0.95 of an eager one, for a first call of about 9 s that captures and compiles. TorchDynamo
captures only fragments of a Pyro program: it breaks the graph at every Pyro message (a
``TypedDict`` with optional keys), at every call of a Pyro distribution (a context manager it
cannot wrap) and at checks on the data (``Tensor.item()``), so the networks between the
breaks run eagerly; Pyro's ``param`` frame also hits Dynamo's recompile limit, one
recompilation per parameter name. So ``compile=None`` compiles only a call expected to run
eagerly for :data:`AUTO_MIN_SECONDS` or more, and keeps compiling only while a compiled
chunk is faster than the eager one.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from inference._programs import Inputs, ProgramInfo, log_importance_weights
from lvm_models._base import rng_state, set_rng_state

# compile=None compiles a call whose chunks are expected to take this long eagerly: compiling
# takes about 9 s and saves about 5% of each chunk.
AUTO_MIN_SECONDS = 180.0
_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}  # relative and absolute, per log weight
_COMPILER_LOGGERS = ("torch._dynamo", "torch._inductor", "torch._subclasses")


class CompileWarning(UserWarning):
    """The log weights could not be compiled; the call ran eagerly, with the same numbers."""


class CompileError(RuntimeError):
    """``compile=True``, and the log weights cannot be compiled; the message says why."""


def check_compile(compile: object) -> bool | None:
    """The ``compile`` option of an estimator: None (where it pays), True or False."""
    if compile is None or isinstance(compile, bool):
        return compile
    raise TypeError(f"compile must be None, True or False; got {compile!r}")


@functools.cache
def _compiled_log_importance_weights() -> Callable[..., torch.Tensor]:
    """:func:`log_importance_weights` under ``torch.compile``: one wrapper per process, so
    TorchDynamo's cache of captured programs serves every call."""
    return torch.compile(log_importance_weights, dynamic=False, options={"fallback_random": True})


class ChunkLogWeights:
    """``log_importance_weights(model, guide, inputs, size, info)`` for each chunk of one call,
    compiled where ``compile`` asks: (size, N) log weights per call of the object.

    The first chunk runs eagerly, timed; the next is compiled and checked against the eager
    chunk; the rest are compiled. Only the call's most frequent chunk size is compiled (a last,
    shorter chunk runs eagerly: compiling a second size would cost more than the chunk), and
    only vectorised programs on the CPU or CUDA (the check replays the RNGs of x's device:
    the CPU's, and a CUDA device's own; the timings wait for the device).

    :param sizes: the particles of every chunk the call evaluates.
    :param compile: False: eager. True: compiled, or :class:`CompileError`. None: compiled when
        the first chunk says the call's chunks would take :data:`AUTO_MIN_SECONDS` or more
        eagerly, for as long as a compiled chunk is the faster.
    :param caller: the estimator, as messages name it.
    :raises CompileError: with ``compile=True``, for programs that cannot be compiled.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        inputs: Inputs,
        info: ProgramInfo,
        sizes: Sequence[int],
        compile: bool | None,
        caller: str,
    ) -> None:
        self._programs = (model, guide, inputs)
        self.info, self.caller, self.required = info, caller, compile is True
        self.size, self._remaining = max(Counter(sizes).items(), key=lambda item: item[::-1])
        self._eager_seconds = 0.0
        reason = _eager_only(inputs, info)
        if self.required and reason is not None:
            raise CompileError(f"{caller}(compile=True): {reason}; pass compile=False or None")
        if compile is False or reason is not None:
            self._stage = "eager"
        else:
            # One chunk of the size, required compiled: it is the one checked.
            self._stage = "verify" if self.required and self._remaining == 1 else "probe"

    def __call__(self, size: int) -> torch.Tensor:
        if size != self.size or self._stage == "eager":
            return self._eager(size)
        self._remaining -= 1
        if self._stage == "probe":
            return self._probe(size)
        if self._stage == "verify":
            return self._verified(size)
        if self._stage == "measure":
            return self._measured(size)
        return self._compiled(size)

    def _eager(self, size: int) -> torch.Tensor:
        return log_importance_weights(*self._programs, size, self.info)

    def _compiled(self, size: int) -> torch.Tensor:
        with _quiet_compiler():
            return _compiled_log_importance_weights()(*self._programs, size, self.info)

    def _probe(self, size: int) -> torch.Tensor:
        """An eager chunk, timed: compile the rest where required or where they would take
        long enough."""
        start = self._clock()
        log_weights = self._eager(size)
        self._eager_seconds = self._clock() - start
        pays = self._eager_seconds * self._remaining >= AUTO_MIN_SECONDS
        self._stage = "verify" if self.required or pays else "eager"
        return log_weights

    def _verified(self, size: int) -> torch.Tensor:
        """The first compiled chunk, checked against the eager chunk from the same RNG state;
        returns the eager one."""
        device = self.info.device
        start = rng_state(device)
        try:
            with warnings.catch_warnings():
                # The eager run of the same chunk below shows the programs' own warnings.
                warnings.simplefilter("ignore")
                compiled = self._compiled(size)
            problem = None
        except Exception as error:  # any failure to compile means: run eagerly
            compiled = None
            problem = f"compiling fails ({type(error).__name__}: {_first_line(error)})"
        compiled_end = rng_state(device)
        set_rng_state(start, device)
        log_weights = self._eager(size)  # the programs' own errors are raised here, as always
        if compiled is not None:
            problem = _mismatch(compiled, log_weights, compiled_end, rng_state(device))
        if problem is not None:
            self._give_up(problem)
        else:
            self._stage = "compiled" if self.required else "measure"
        return log_weights

    def _measured(self, size: int) -> torch.Tensor:
        """A compiled chunk, timed: back to eager if it is not the faster."""
        start = self._clock()
        log_weights = self._compiled(size)
        faster = self._clock() - start < self._eager_seconds
        self._stage = "compiled" if faster else "eager"
        return log_weights

    def _clock(self) -> float:
        """Seconds, once the device has finished the work queued so far (a CUDA chunk
        returns before it is computed); called in the probe and the measure only."""
        if self.info.device.type == "cuda":
            torch.cuda.synchronize(self.info.device)
        return time.perf_counter()

    def _give_up(self, problem: str) -> None:
        if self.required:
            raise CompileError(f"{self.caller}(compile=True): {problem}")
        warnings.warn(
            f"{self.caller}: the log weights run eagerly, not compiled: {problem}",
            CompileWarning,
            stacklevel=5,
        )
        self._stage = "eager"


def _eager_only(inputs: Inputs, info: ProgramInfo) -> str | None:
    """Why the log weights of these programs are not compiled, or None where they can be."""
    if not info.vectorized:
        return (
            "the programs run one particle at a time (see the VectorizationWarning), which is "
            "not compiled"
        )
    if inputs.x.device.type not in ("cpu", "cuda"):
        return f"x is on {inputs.x.device}; compiled chunks are checked on the CPU and CUDA only"
    return None


def _mismatch(
    compiled: torch.Tensor,
    eager: torch.Tensor,
    compiled_end: tuple[torch.Tensor, ...],
    eager_end: tuple[torch.Tensor, ...],
) -> str | None:
    """Why a compiled chunk is not the eager one (None when it is): another use of the RNG
    (the RNG states after each, :func:`~lvm_models._base.rng_state`), another shape or
    dtype, or log weights apart by more than round-off."""
    if not all(map(torch.equal, compiled_end, eager_end)):
        return "the compiled chunk draws from torch's RNG differently from the programs"
    if compiled.shape != eager.shape or compiled.dtype != eager.dtype:
        return (
            f"the compiled chunk gives {tuple(compiled.shape)} {compiled.dtype} log weights, "
            f"the programs {tuple(eager.shape)} {eager.dtype}"
        )
    tolerance = _TOLERANCE.get(eager.dtype, 1e-3)
    close = torch.isclose(compiled, eager, rtol=tolerance, atol=tolerance, equal_nan=True)
    if bool(close.all()):
        return None
    particle, point = (~close).nonzero()[0].tolist()
    return (
        f"the compiled log weight of particle {particle}, point {point} is "
        f"{compiled[particle, point].item():.8g}, the programs' "
        f"{eager[particle, point].item():.8g} from the same draws: the programs do something "
        "the capture does not repeat"
    )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


@contextmanager
def _quiet_compiler() -> Iterator[None]:
    """TorchDynamo logs each graph break in Pyro's handlers as a warning, and a failure to
    capture as an error before raising it; an estimate prints neither (a failure becomes a
    :class:`CompileWarning` or :class:`CompileError`)."""
    loggers = [logging.getLogger(name) for name in _COMPILER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
