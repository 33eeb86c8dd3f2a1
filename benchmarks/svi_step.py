"""Benchmark 2: one SVI training step on the digits VAE, batch 128, 1 and 8 particles.

``inference.fit`` (SVI with ``Trace_ELBO``, and with ``jit=True`` Pyro's ``JitTrace_ELBO``)
against a hand-written step: the reparameterised ELBO of the same layers, the same minibatch
draw, ``torch.optim.Adam``. A step is timed in steady state: the clock runs from step
``WARMUP`` to the last, so one-off costs (the first, validated step; JIT compilation) stay out.

    python -m benchmarks.svi_step
"""

from __future__ import annotations

import json
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.common import LATENT_DIM, digits, digits_vae, interleaved_seconds

BATCH_SIZE = 128
STEPS = 250
WARMUP = 50


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


def library_fit(x: torch.Tensor, num_particles: int, jit: bool) -> float:
    """Seconds per step of ``inference.fit``, from step WARMUP on."""
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
        jit=jit,
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

    interleaved_seconds(
        {
            "handwritten": recorder("handwritten", lambda: handwritten_fit(x, num_particles)),
            "trace_elbo": recorder("trace_elbo", lambda: library_fit(x, num_particles, False)),
            "jit_trace_elbo": recorder(
                "jit_trace_elbo", lambda: library_fit(x, num_particles, True)
            ),
        },
        repeats=repeats,
        warmup=0,
    )
    medians = {name: statistics.median(values) for name, values in per_step.items()}
    return {
        "num_particles": num_particles,
        "batch_size": BATCH_SIZE,
        "ms_per_step": {name: 1e3 * value for name, value in medians.items()},
        "ratio": {
            name: value / medians["handwritten"]
            for name, value in medians.items()
            if name != "handwritten"
        },
    }


if __name__ == "__main__":
    print(json.dumps([time_steps(p, repeats=5, threads=2) for p in (1, 8)], indent=2))
