"""Hamiltonian Monte Carlo on a geometric path of densities, vectorised over chains and points.

The annealed target at inverse temperature beta is, in unconstrained coordinates u,

    log f_beta(u) = (1 - beta) log q(z(u)) + beta log p(x, z(u)) + log |det dz/du|,

so a state keeps both endpoint log-densities and their gradients, and the density at any
beta is a weighted sum of them: one evaluation of model and guide serves every beta. Written
as blackjax writes its kernels (``blackjax/mcmc/hmc.py``): an ``init`` and a ``step``
function with ``State`` and ``Info`` named tuples. Positions have shape (C, N, d): C chains
for each of N data points, each a vector of d unconstrained coordinates; every chain and
point is its own sampler (its own step size per point, its own Metropolis test).

Neal (2011), "MCMC using Hamiltonian dynamics": leapfrog integration with an identity mass
matrix and a Metropolis correction. Written by hand because Pyro's ``HMC`` kernel runs one
chain on one joint density, with no per-point step sizes and no path of densities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

# An energy error (nats) beyond which a trajectory is divergent (Stan's threshold).
DIVERGENCE_ENERGY = 1000.0


class HMCState(NamedTuple):
    """A position and what the annealed density needs there.

    :ivar position: u, shape (C, N, d).
    :ivar log_q: log q(z(u) given x), (C, N): the path's start.
    :ivar log_joint: log p(x, z(u)), (C, N): the path's end (unnormalised posterior).
    :ivar log_jacobian: log |det dz/du|, (C, N).
    :ivar grad_q: gradient in u of log q + log |det dz/du|, (C, N, d).
    :ivar grad_joint: gradient in u of log p(x, z) + log |det dz/du|, (C, N, d).
    """

    position: torch.Tensor
    log_q: torch.Tensor
    log_joint: torch.Tensor
    log_jacobian: torch.Tensor
    grad_q: torch.Tensor
    grad_joint: torch.Tensor

    def log_density(self, beta: float) -> torch.Tensor:
        """log f_beta(u), (C, N)."""
        return (1 - beta) * self.log_q + beta * self.log_joint + self.log_jacobian

    def grad(self, beta: float) -> torch.Tensor:
        """The gradient of log f_beta in u, (C, N, d)."""
        return (1 - beta) * self.grad_q + beta * self.grad_joint


class HMCInfo(NamedTuple):
    """What one transition did, per chain and point.

    :ivar acceptance_rate: min(1, exp(-Delta H)), (C, N); 0 for a divergent trajectory.
    :ivar is_accepted: whether the proposal was taken, (C, N).
    :ivar is_divergent: whether the trajectory met a non-finite density or gradient, (C, N).
    """

    acceptance_rate: torch.Tensor
    is_accepted: torch.Tensor
    is_divergent: torch.Tensor


LogDensityFn = Callable[[torch.Tensor], HMCState]


def hmc_init(position: torch.Tensor, evaluate: LogDensityFn) -> HMCState:
    """The state at ``position`` (C, N, d); ``evaluate`` maps positions to states."""
    return evaluate(position)


def hmc_step(
    state: HMCState,
    evaluate: LogDensityFn,
    beta: float,
    step_size: torch.Tensor,
    num_leapfrog: int,
) -> tuple[HMCState, HMCInfo]:
    """One HMC transition leaving f_beta invariant, for every chain and point at once.

    :param state: the current :class:`HMCState`.
    :param evaluate: maps positions (C, N, d) to states; called ``num_leapfrog`` times.
    :param float beta: the inverse temperature in [0, 1].
    :param step_size: leapfrog step size per chain and point, (C, N), or per point, (N,).
    :param int num_leapfrog: leapfrog steps per trajectory.
    :returns: the new state and an :class:`HMCInfo`.
    """
    momentum = torch.randn_like(state.position)  # (C, N, d)
    proposal, end_momentum, divergent = _leapfrog(
        state, evaluate, beta, step_size.unsqueeze(-1), momentum, num_leapfrog
    )
    energy_change = _hamiltonian(proposal, end_momentum, beta) - _hamiltonian(
        state, momentum, beta
    )  # (C, N)
    log_accept = torch.where(divergent | energy_change.isnan(), -torch.inf, -energy_change)
    acceptance_rate = log_accept.clamp_max(0.0).exp()
    accepted = torch.rand_like(acceptance_rate) < acceptance_rate
    new_state = HMCState(*(_choose(accepted, new, old) for new, old in zip(proposal, state)))
    return new_state, HMCInfo(acceptance_rate, accepted, divergent)


def _leapfrog(
    state: HMCState,
    evaluate: LogDensityFn,
    beta: float,
    step_size: torch.Tensor,
    momentum: torch.Tensor,
    num_leapfrog: int,
) -> tuple[HMCState, torch.Tensor, torch.Tensor]:
    """Integrate Hamilton's equations: the end state, its momentum and the divergent mask.

    A chain whose trajectory meets a non-finite density or gradient, or whose energy grows by
    more than ``DIVERGENCE_ENERGY``, is divergent: it goes back to its start and stays there
    (and is rejected), so the model is not run on the far-off, NaN or inf positions the
    trajectory would go on to.
    """
    start = state
    start_energy = _hamiltonian(state, momentum, beta)  # (C, N)
    divergent = torch.zeros(state.log_q.shape, dtype=torch.bool, device=state.position.device)
    momentum = momentum + 0.5 * step_size * state.grad(beta)
    for index in range(num_leapfrog):
        moved = state.position + step_size * momentum
        state = evaluate(torch.where(divergent.unsqueeze(-1), start.position, moved))
        gradient = state.grad(beta)
        half = 0.5 if index == num_leapfrog - 1 else 1.0
        momentum = momentum + half * step_size * gradient
        energy_error = _hamiltonian(state, momentum, beta) - start_energy
        # A NaN error compares False: the finiteness test below catches it.
        divergent = divergent | (energy_error > DIVERGENCE_ENERGY)
        divergent = divergent | ~(state.log_density(beta).isfinite() & gradient.isfinite().all(-1))
    state = HMCState(*(_choose(divergent, old, new) for new, old in zip(state, start)))
    return state, momentum, divergent


def _hamiltonian(state: HMCState, momentum: torch.Tensor, beta: float) -> torch.Tensor:
    """H = -log f_beta(u) + |momentum|^2 / 2, (C, N)."""
    return -state.log_density(beta) + 0.5 * momentum.pow(2).sum(-1)


def _choose(mask: torch.Tensor, if_true: torch.Tensor, if_false: torch.Tensor) -> torch.Tensor:
    """``if_true`` where mask (C, N), else ``if_false``; trailing dims broadcast."""
    mask = mask.reshape(mask.shape + (1,) * (if_true.dim() - mask.dim()))
    return torch.where(mask, if_true, if_false)
