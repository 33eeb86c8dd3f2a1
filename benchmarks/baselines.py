"""The fastest hand-written baselines of the IW estimate of the digits VAE: the same arithmetic
as ``iw.handwritten_iw``, once under ``torch.compile`` and once in JAX under ``jax.jit``.

Both evaluate the very weights of ``common.digits_vae`` (copied into JAX as arrays), draw
their noise in chunks of the library's default size and reduce with a running log-sum-exp, so
they measure the compiler, not a different algorithm.

    python -m benchmarks.baselines   # prints seconds of each at K = 1000
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from benchmarks.common import LATENT_DIM, digits, digits_vae, interleaved_seconds
from benchmarks.iw import default_chunk, handwritten_iw

MIN_SCALE = 1e-4  # as guides.amortized


def _chunk_log_weights(encoder, decoder, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log p(x, z) - log q(z given x) for z = loc + scale * eps: (c, N), plain tensor ops."""
    out = encoder(x)
    loc, scale = out[:, :LATENT_DIM], F.softplus(out[:, LATENT_DIM:]) + MIN_SCALE
    z = loc + scale * eps  # (c, N, k)
    logits = decoder(z)
    log_likelihood = -F.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits), reduction="none"
    ).sum(-1)
    log_prior = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_q = (-0.5 * eps**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    return log_likelihood + log_prior - log_q


def compiled_iw(num_samples: int, repeats: int, threads: int) -> dict:
    """Seconds of the hand-written eager IW and of the same per-chunk function compiled."""
    torch.set_num_threads(threads)
    model, guide = digits_vae()
    x = digits()
    chunk = default_chunk(x.shape[0])
    encoder, decoder = guide.encoder, model.decoder
    compiled = torch.compile(lambda eps: _chunk_log_weights(encoder, decoder, x, eps))

    @torch.no_grad()
    def run_compiled() -> torch.Tensor:
        running_max = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
        running_sum = torch.zeros(x.shape[0], dtype=torch.float64)
        for start in range(0, num_samples, chunk):
            size = min(chunk, num_samples - start)
            log_w = compiled(torch.randn(size, x.shape[0], LATENT_DIM)).double()
            new_max = torch.maximum(running_max, log_w.max(0).values)
            running_sum = running_sum * (running_max - new_max).exp()
            running_sum = running_sum + (log_w - new_max).exp().sum(0)
            running_max = new_max
        return running_max + running_sum.log() - math.log(num_samples)

    seconds = interleaved_seconds(
        {
            "handwritten": lambda: handwritten_iw(model, guide, x, num_samples, chunk),
            "handwritten_compiled": run_compiled,
        },
        repeats=repeats,
        warmup=2,  # the first calls compile (one graph per chunk size)
    )
    return {"num_samples": num_samples, "seconds": seconds}


def jax_iw(num_samples: int, repeats: int, threads: int) -> dict:
    """Seconds of the same estimate written in JAX, the chunk function under ``jax.jit``."""
    import jax
    import jax.numpy as jnp

    torch.set_num_threads(threads)
    model, guide = digits_vae()
    x_torch = digits()
    chunk = default_chunk(x_torch.shape[0])
    x = jnp.asarray(x_torch.numpy())

    def layers(network: torch.nn.Sequential) -> list[tuple]:
        return [
            (jnp.asarray(m.weight.detach().numpy().T), jnp.asarray(m.bias.detach().numpy()))
            for m in network
            if isinstance(m, torch.nn.Linear)
        ]

    encoder, decoder = layers(guide.encoder), layers(model.decoder)

    def mlp(params: list[tuple], h):
        for weight, bias in params[:-1]:
            h = jnp.tanh(h @ weight + bias)
        weight, bias = params[-1]
        return h @ weight + bias

    @jax.jit
    def chunk_log_weights(key, size_array):
        out = mlp(encoder, x)
        loc, scale = out[:, :LATENT_DIM], jax.nn.softplus(out[:, LATENT_DIM:]) + MIN_SCALE
        eps = jax.random.normal(key, (size_array.shape[0], *loc.shape))
        z = loc + scale * eps
        logits = mlp(decoder, z)
        log_likelihood = (x * logits - jax.nn.softplus(logits)).sum(-1)
        log_prior = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_q = (-0.5 * eps**2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)
        return log_likelihood + log_prior - log_q

    def run() -> object:
        key = jax.random.PRNGKey(0)
        running = None
        for start in range(0, num_samples, chunk):
            key, sub = jax.random.split(key)
            size = min(chunk, num_samples - start)
            log_w = chunk_log_weights(sub, jnp.zeros(size))
            part = jax.scipy.special.logsumexp(log_w, axis=0)
            running = part if running is None else jnp.logaddexp(running, part)
        return (running - math.log(num_samples)).block_until_ready()

    seconds = interleaved_seconds({"jax_jit": run}, repeats=repeats, warmup=2)
    return {"num_samples": num_samples, "seconds": seconds}


def main() -> None:
    for num_samples in (1000,):
        print(compiled_iw(num_samples, repeats=3, threads=2))
        print(jax_iw(num_samples, repeats=3, threads=2))


if __name__ == "__main__":
    main()
