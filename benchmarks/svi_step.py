"""Benchmark 2: one SVI training step on the digits VAE, batch 128, 1 and 8 particles.

``inference.fit`` by default (the step compiled where it can be: the ELBO with the library's
traced ``Trace_ELBO``, free bits with ``pyro.ops.jit.trace``) and eagerly (``jit=False``),
against a hand-written step (the reparameterised ELBO of the same layers, the same minibatch
draw, ``torch.optim.Adam``) and NumPyro's SVI step on the same VAE under ``jax.jit``
(:func:`benchmarks.baselines.numpyro_svi_step`). A step is timed in steady state: the clock
runs from step ``WARMUP`` to the last, so one-off costs (the first, validated step; compiling
and checking the compiled step) stay out. The runs alternate within every repeat and each
figure is the median over repeats.

    python -m benchmarks.svi_step [--repeats 5] [--threads 2] [--particles 1 8]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.baselines import numpyro_svi_step
from benchmarks.common import LATENT_DIM, digits, digits_vae, interleaved_seconds

BATCH_SIZE = 128
STEPS = 250
WARMUP = 50
FREE_BITS = 0.1  # nats per latent unit: a floor that binds on some units of the digits VAE
# fit's options of each library run: by default (compiled where it can be) and eagerly.
LIBRARY_RUNS = {
    "library": {},
    "library_eager": {"jit": False},
    "free_bits": {"free_bits": FREE_BITS},
    "free_bits_eager": {"free_bits": FREE_BITS, "jit": False},
}
COMPILED_PAIRS = {
    "elbo": ("library_eager", "library"),
    "free_bits": ("free_bits_eager", "free_bits"),
}


def handwritten_fit(x: torch.Tensor, num_particles: int) -> float:
    """Seconds per step of the plain PyTorch loop, from step WARMUP on."""
    model, guide = digits_vae()
    encoder, decoder = guide.encoder, model.decoder
    optimizer = torch.optim.Adam([*model.parameters(), *guide.parameters()], lr=1e-3, foreach=True)
    generator = torch.Generator().manual_seed(0)
    scale = x.shape[0] / BATCH_SIZE
    for step in range(STEPS):
        if step == WARMUP:
            start = time.perf_counter()
        batch = x[torch.randperm(x.shape[0], generator=generator)[:BATCH_SIZE]]
        out = encoder(batch)
        loc, q_scale = out[:, :LATENT_DIM], F.softplus(out[:, LATENT_DIM:]) + 1e-4
        z = loc + q_scale * torch.randn(num_particles, *loc.shape)  # (P, B, k)
        logits = decoder(z)
        log_likelihood = -F.binary_cross_entropy_with_logits(
            logits, batch.expand_as(logits), reduction="none"
        ).sum(-1)
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_q = torch.distributions.Normal(loc, q_scale).log_prob(z).sum(-1)
        loss = -(log_likelihood + log_prior - log_q).mean(0).sum() * scale
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / (STEPS - WARMUP)


def library_fit(x: torch.Tensor, num_particles: int, **options) -> float:
    """Seconds per step of ``inference.fit`` with ``options``, from step WARMUP on."""
    from inference import fit

    model, guide = digits_vae()
    marks = {}

    def mark(step, model, guide):
        marks.setdefault(step + 1, time.perf_counter())

    fit(
        model,
        guide,
        x,
        steps=STEPS,
        batch_size=BATCH_SIZE,
        lr=1e-3,
        num_particles=num_particles,
        seed=0,
        progress=False,
        callback=mark,
        callback_every=WARMUP,
        **options,
    )
    return (marks[STEPS] - marks[WARMUP]) / (STEPS - WARMUP)


def time_steps(num_particles: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    x = digits()
    per_step = {}

    def recorder(name, run):
        def record():
            per_step.setdefault(name, []).append(run())

        return record

    runs = {
        "handwritten": lambda: handwritten_fit(x, num_particles),
        "numpyro_jit": lambda: numpyro_svi_step(num_particles, BATCH_SIZE, STEPS, WARMUP),
    }
    for name, options in LIBRARY_RUNS.items():
        runs[name] = functools.partial(library_fit, x, num_particles, **options)
    interleaved_seconds(
        {name: recorder(name, run) for name, run in runs.items()}, repeats=repeats, warmup=0
    )
    medians = {name: statistics.median(values) for name, values in per_step.items()}
    return {
        "num_particles": num_particles,
        "batch_size": BATCH_SIZE,
        "ms_per_step": {name: 1e3 * value for name, value in medians.items()},
        "ratio": {name: value / medians["handwritten"] for name, value in medians.items()},
        "compiled_over_eager": {
            name: medians[compiled] / medians[eager]
            for name, (eager, compiled) in COMPILED_PAIRS.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--particles", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    rows = [time_steps(p, repeats=args.repeats, threads=args.threads) for p in args.particles]
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
