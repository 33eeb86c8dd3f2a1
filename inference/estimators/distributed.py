"""Data-parallel IW and AIS with ``torch.distributed``: the data plate split into blocks.

The N data points are cut into fixed blocks of ``block_size`` consecutive points. Block b is
evaluated by the single-process estimator, seeded by its own seed derived from (seed, b), on
rank b mod W of the W ranks; the per-point results of every block are then gathered on every
rank and put back in the order of the points. A block's draws depend on the seed, the block
size and b only, never on which rank holds it or how many ranks there are, so the result is
the same, bit for bit, on any number of ranks, one process without a process group included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from operator import itemgetter
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from inference._programs import checked_inputs
from inference._validate import check_positive_int, check_seed
from inference.estimators.ais import AISEstimate, ais_log_marginal
from inference.estimators.bounds import ImportanceEstimate, iw_log_marginal

# Points per block when the caller names none. Part of what the result is (the draws of a
# block depend on it), so it is a constant: never derived from N or the number of ranks.
DEFAULT_BLOCK_SIZE = 1024


def distributed_iw_log_marginal(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: int,
    seed: int,
    block_size: int = DEFAULT_BLOCK_SIZE,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    **iw_options: object,
) -> ImportanceEstimate:
    """Importance-weighted estimate of log p(x) per point, log (1/K) sum_k w_k, computed by
    the ranks of ``torch.distributed`` (or by this process alone when none is initialised).

    Burda, Grosse and Salakhutdinov (2016), as :func:`~inference.iw_log_marginal`, which
    evaluates each block: points b B to (b + 1) B - 1 (B = ``block_size``) with the seed
    ``SeedSequence([seed, b]).generate_state(1)[0]`` (NumPy's seed derivation), on rank
    b mod W of W. ``per_point``, ``per_point_stderr``, ``ess`` and ``khat`` are those of the
    blocks in the order of the points; ``mean`` and ``stderr`` are recomputed from them as
    :class:`~inference.estimators.bounds.Estimate` does. Each point's estimate has the
    distribution of the plain estimator's, but not its numbers: those depend on ``seed`` and
    B, and on nothing else (not W), so any number of ranks, one included, gives the same bits.

    Every rank calls it with the same arguments and the whole data set x; it evaluates only
    the points of its own blocks and returns the whole result on every rank. The process group is
    the caller's: gloo for tensors on the CPU, nccl for tensors on CUDA (after
    ``torch.cuda.set_device(local_rank)``, which the gather of results uses). An error on one
    rank is raised on every rank (a RuntimeError naming the rank and block on the others), so
    none waits for a rank that failed. Launch, e.g. on 4 processes::

        # torchrun --nproc_per_node=4 evaluate.py
        torch.distributed.init_process_group("gloo")
        estimate = distributed_iw_log_marginal(model, guide, x, num_samples=1000, seed=0)
        if torch.distributed.get_rank() == 0:
            print(estimate.mean, estimate.stderr)
        torch.distributed.destroy_process_group()

    :param model, guide: as in :func:`~inference.iw_log_marginal`.
    :param x: data (N, ...), the same on every rank.
    :param int num_samples: K, particles per estimate.
    :param int seed: an integer in [0, 2**63 - 1] (required: it fixes every block's draws).
    :param int block_size: B, points per block (the last block may hold fewer); the result
        depends on it. Where the model has another plate of size B, or of the last block's
        size, name the data plate (``data_plate=``).
    :param model_args, model_kwargs: as in :func:`~inference.iw_log_marginal`: a tensor
        whose leading dimension is N is split into blocks with x.
    :param iw_options: the other options of :func:`~inference.iw_log_marginal`
        (``chunk_size``, ``num_replicates``, ``dtype``, ``data_plate``, ``vectorize``...).
    :returns: an :class:`~inference.estimators.bounds.ImportanceEstimate` in nats, with
        ``per_point``, ``per_point_stderr``, ``ess``, ``khat`` of shape (N,) on x's device.
    :raises ValueError: naming a bad argument, or x of different sizes on different ranks.
    """
    evaluate = partial(iw_log_marginal, model, guide, num_samples=num_samples, **iw_options)
    return _map_blocks(evaluate, x, seed, block_size, model_args, model_kwargs)


def distributed_ais_log_marginal(
    model: Callable,
    guide: Callable | None,
    x: torch.Tensor,
    *,
    num_steps: int,
    num_chains: int,
    seed: int,
    block_size: int = DEFAULT_BLOCK_SIZE,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    **ais_options: object,
) -> AISEstimate:
    """Annealed importance sampling estimate of log p(x) per point, log (1/C) sum_c w_c, with
    the data split into blocks over the ranks of ``torch.distributed``.

    Neal (2001), as :func:`~inference.ais_log_marginal`, which evaluates each block (its
    pilot run adapting the step sizes of the block's points); the blocks, their seeds, the
    ranks that hold them, the gather and the launch are those of
    :func:`distributed_iw_log_marginal`. ``acceptance`` and ``step_size`` are gathered per
    point like ``per_point``.

    :param int num_steps: T, the annealing steps.
    :param int num_chains: C, chains per data point.
    :param ais_options: the other options of :func:`~inference.ais_log_marginal`
        (``num_leapfrog``, ``target_accept``, ``num_warmup_steps``, ``data_plate``...).
    :returns: an :class:`~inference.estimators.ais.AISEstimate` in nats, its per-point
        tensors of shape (N,) on x's device.
    """
    evaluate = partial(
        ais_log_marginal, model, guide, num_steps=num_steps, num_chains=num_chains, **ais_options
    )
    return _map_blocks(evaluate, x, seed, block_size, model_args, model_kwargs)


class _Share(NamedTuple):
    """What one rank sends to all: its blocks' estimates (CPU tensors) by block index, and
    the error it stopped at, as text naming the rank and block (None when there was none)."""

    estimates: list[tuple[int, ImportanceEstimate]]
    error: str | None


def _map_blocks(
    evaluate: Callable[..., ImportanceEstimate],
    x: object,
    seed: object,
    block_size: object,
    model_args: tuple,
    model_kwargs: dict | None,
) -> ImportanceEstimate:
    """``evaluate`` (an estimator with the model, guide and options bound) on this rank's
    blocks, each with its own seed, then every rank's blocks gathered and joined in order."""
    if check_seed(seed) is None:
        raise ValueError(
            "seed must be an integer in [0, 2**63 - 1]: it fixes the draws of every block on "
            "every rank; got None"
        )
    block_size = check_positive_int("block_size", block_size)
    inputs = checked_inputs(x, model_args, model_kwargs)
    rank, world_size = _rank_and_world_size()
    _check_same_num_data(inputs.num_data, world_size)
    num_blocks = -(-inputs.num_data // block_size)
    estimates, failure, message = [], None, None
    for block in range(rank, num_blocks, world_size):
        start, stop = block * block_size, min((block + 1) * block_size, inputs.num_data)
        part = inputs.subset(torch.arange(start, stop, device=inputs.x.device))
        try:
            estimate = evaluate(
                part.x,
                seed=_block_seed(seed, block),
                model_args=part.args,
                model_kwargs=part.kwargs,
            )
        except Exception as error:
            # Sent to the other ranks, which would otherwise wait for this one's results.
            failure = error
            message = f"rank {rank}, block {block} (points {start} to {stop - 1}): {error!r}"
            break
        estimates.append((block, estimate))
    # Copied once the blocks are done, so no copy waits on a block still being computed.
    estimates = [(block, _on_cpu(estimate)) for block, estimate in estimates]
    shares = _all_gather(_Share(estimates, message), world_size)
    if failure is not None:
        raise failure
    errors = [share.error for share in shares if share.error is not None]
    if errors:
        raise RuntimeError(f"evaluating the blocks failed on another rank: {errors[0]}")
    gathered = sorted((pair for share in shares for pair in share.estimates), key=itemgetter(0))
    return _joined([estimate for _, estimate in gathered], inputs.x.device)


def _rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather(value: object, world_size: int) -> list:
    """``value`` of every rank, in rank order (just ``[value]`` without a process group)."""
    if world_size == 1:
        return [value]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, value)
    return gathered


def _check_same_num_data(num_data: int, world_size: int) -> None:
    """Before any work: every rank must hold the same N, or the blocks would not fit together."""
    sizes = _all_gather(num_data, world_size)
    if len(set(sizes)) > 1:
        raise ValueError(
            "x must be the whole data set, the same on every rank; got "
            f"{sizes} points on ranks 0 to {world_size - 1}"
        )


def _block_seed(seed: int, block: int) -> int:
    """A 32-bit seed of its own for each block: NumPy's SeedSequence hashes (seed, block), so
    neighbouring blocks (and seeds) get unrelated streams."""
    return int(np.random.SeedSequence([seed, block]).generate_state(1)[0])


def _per_point_fields(estimate: ImportanceEstimate) -> list[str]:
    """The estimate's tensors given at construction: all of them are per point, (n,)."""
    return [
        field.name
        for field in dataclasses.fields(estimate)
        if field.init and isinstance(getattr(estimate, field.name), torch.Tensor)
    ]


def _on_cpu(estimate: ImportanceEstimate) -> ImportanceEstimate:
    """The estimate with its tensors on the CPU: a pickled CUDA tensor would come back on the
    sender's device in the receiver's process."""
    names = _per_point_fields(estimate)
    return dataclasses.replace(estimate, **{name: getattr(estimate, name).cpu() for name in names})


def _joined(estimates: list[ImportanceEstimate], device: torch.device) -> ImportanceEstimate:
    """The blocks' estimates, in order, as one: per-point tensors concatenated, the rest (K,
    the sites given...) the same in every block, taken from the first; ``mean`` and
    ``stderr`` are recomputed by the dataclass from the joined per-point values."""
    first = estimates[0]
    joined = {
        name: torch.cat([getattr(estimate, name) for estimate in estimates]).to(device)
        for name in _per_point_fields(first)
    }
    return dataclasses.replace(first, **joined)
