"""Data-parallel IW and AIS: two gloo ranks give, bit for bit, what one process gives."""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import pyro
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _pairs import linear_gaussian

from guides import ExactPosterior, PriorGuide
from inference import (
    distributed_ais_log_marginal,
    distributed_iw_log_marginal,
    iw_log_marginal,
)

WORLD_SIZE = 2
NUM_DATA = 10
# Four blocks of 3, 3, 3 and 1 points: rank 0 holds blocks 0 and 2, rank 1 blocks 1 and 3.
IW = dict(num_samples=64, seed=7, block_size=3)
AIS = dict(num_steps=4, num_chains=4, num_warmup_steps=4, num_leapfrog=3, seed=7, block_size=3)
Z = 4.0  # standard errors: a correct estimator strays this far with probability 6e-5


def _pair():
    model = linear_gaussian(data_dim=4, latent_dim=2, noise=0.5)
    return model, PriorGuide(model)


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    pyro.set_rng_seed(0)
    model, _ = _pair()
    return model.sample(NUM_DATA)


def _evaluate_on_rank(rank: int, rendezvous: str, x: torch.Tensor, threads: int, out: Path) -> None:
    """One of the spawned ranks: every distributed estimate of the tests, saved to a file."""
    torch.set_num_threads(threads)  # as the process the results are compared with
    # A rank left waiting by a crashed peer errors after an hour rather than hanging CI; the
    # bound is far above any run on a slow machine, so it limits nothing that works.
    dist.init_process_group(
        "gloo",
        init_method=rendezvous,
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(hours=1),
    )
    try:
        model, guide = _pair()
        results = {
            "iw": distributed_iw_log_marginal(model, guide, x, **IW),
            "ais": distributed_ais_log_marginal(model, guide, x, **AIS),
            "one_block": distributed_iw_log_marginal(model, guide, x[:2], **IW),
        }
        try:
            distributed_iw_log_marginal(model, guide, x[: NUM_DATA - rank], **IW)
        except ValueError as error:
            results["different_data"] = str(error)
        try:  # only rank 0 holds a block of two points, and it fails there
            distributed_iw_log_marginal(model, guide, x[:2], **IW, chunk_size=0)
        except (ValueError, RuntimeError) as error:
            results["failed_block"] = error
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(data, tmp_path_factory) -> list[dict]:
    """What each of two spawned gloo ranks computed, by rank."""
    out = tmp_path_factory.mktemp("ranks")
    rendezvous = f"file://{out / 'rendezvous'}"
    args = (rendezvous, data, torch.get_num_threads(), out)
    mp.spawn(_evaluate_on_rank, args=args, nprocs=WORLD_SIZE)
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


def _assert_identical(estimate, reference, per_point_fields: tuple[str, ...]) -> None:
    for name in per_point_fields:
        torch.testing.assert_close(
            getattr(estimate, name), getattr(reference, name), rtol=0, atol=0, equal_nan=True
        )
    assert (estimate.mean, estimate.stderr) == (reference.mean, reference.stderr)


IW_FIELDS = ("per_point", "per_point_stderr", "ess", "khat")


def test_iw_on_two_ranks_is_bit_identical_to_one_process_on_every_rank(ranks, data):
    model, guide = _pair()
    reference = distributed_iw_log_marginal(model, guide, data, **IW)
    assert reference.per_point.shape == (NUM_DATA,)
    assert bool(torch.isfinite(reference.khat).all())  # K = 64 leaves a tail to fit
    for result in ranks:
        _assert_identical(result["iw"], reference, IW_FIELDS)


def test_ais_on_two_ranks_is_bit_identical_to_one_process_on_every_rank(ranks, data):
    model, guide = _pair()
    reference = distributed_ais_log_marginal(model, guide, data, **AIS)
    for result in ranks:
        _assert_identical(result["ais"], reference, (*IW_FIELDS, "acceptance", "step_size"))


def test_a_rank_without_blocks_still_gets_the_whole_result(ranks, data):
    model, guide = _pair()
    reference = distributed_iw_log_marginal(model, guide, data[:2], **IW)
    for result in ranks:
        _assert_identical(result["one_block"], reference, IW_FIELDS)


def test_ranks_holding_different_data_sets_fail_on_every_rank(ranks):
    for result in ranks:
        assert "the same on every rank" in result["different_data"]


def test_an_error_on_one_rank_is_raised_on_every_rank(ranks):
    failing, waiting = (result["failed_block"] for result in ranks)
    assert isinstance(failing, ValueError) and "chunk_size" in str(failing)
    assert isinstance(waiting, RuntimeError)
    assert "rank 0, block 0" in str(waiting) and "chunk_size" in str(waiting)


def test_points_come_back_in_order_with_the_exact_posterior():
    model = linear_gaussian(data_dim=4, latent_dim=2, noise=0.5)
    x = model.sample(NUM_DATA)
    estimate = distributed_iw_log_marginal(model, ExactPosterior(model), x, **IW)
    torch.testing.assert_close(estimate.per_point, model.log_marginal(x), rtol=0, atol=1e-10)


def test_mean_and_stderr_are_those_of_all_the_points(data):
    model, guide = _pair()
    estimate = distributed_iw_log_marginal(model, guide, data, **IW)
    assert estimate.mean == estimate.per_point.mean().item()
    assert estimate.stderr == (estimate.per_point_stderr.pow(2).sum().sqrt() / NUM_DATA).item()


def test_blocked_iw_agrees_with_plain_iw_within_standard_errors(data):
    model, guide = _pair()
    options = dict(num_samples=10, num_replicates=100)
    blocked = distributed_iw_log_marginal(model, guide, data, seed=1, block_size=3, **options)
    plain = iw_log_marginal(model, guide, data, seed=2, **options)
    assert abs(blocked.mean - plain.mean) < Z * math.hypot(blocked.stderr, plain.stderr)


def test_seed_is_required(data):
    model, guide = _pair()
    with pytest.raises(ValueError, match="seed must be an integer"):
        distributed_iw_log_marginal(model, guide, data, num_samples=4, seed=None)


def test_block_size_must_be_a_positive_integer(data):
    model, guide = _pair()
    with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
        distributed_iw_log_marginal(model, guide, data, num_samples=4, seed=0, block_size=0)
