"""The hand-written baselines the library is measured against, on the digits VAE.

- the IW estimate of log p(x) in plain eager PyTorch (:func:`handwritten_iw`), the same
  arithmetic with its per-chunk function under ``torch.compile`` (:func:`compiled_runner`),
  and in JAX under ``jax.jit`` (:func:`jax_runner`). All evaluate the very weights of
  ``common.digits_vae`` (copied into JAX as arrays), draw their noise in chunks of the
  library's default size and reduce with a running log-sum-exp, so they measure the
  compiler, not a different algorithm;
- NumPyro's SVI step on the same VAE, the update under ``jax.jit``
  (:func:`numpyro_svi_step`).

    python -m benchmarks.baselines   # seconds of each at K = 1000, and NumPyro's SVI step
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from benchmarks.common import LATENT_DIM, digits, digits_vae, interleaved_seconds

MIN_SCALE = 1e-4  # as guides.amortized


def default_chunk(num_data: int) -> int:
    """The library's default chunk of particles (``inference.estimators.bounds``), for both
    estimates; written out so that a hand-written worker never imports the library."""
    return max(1, 2**15 // num_data)


@torch.no_grad()
def handwritten_iw(model, guide, x: torch.Tensor, num_samples: int, chunk_size: int):
    """log (1/K) sum_k p(x, z_k) / q(z_k given x) per point, written out in plain PyTorch."""
    q = guide.distribution(x)  # Normal, batch (N,), event (k,)
    prior = model.prior()
    running_max = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
    running_sum = torch.zeros(x.shape[0], dtype=torch.float64)
    for start in range(0, num_samples, chunk_size):
        z = q.sample((min(chunk_size, num_samples - start),))  # (c, N, k)
        log_w = prior.log_prob(z) + model.likelihood(z).log_prob(x) - q.log_prob(z)  # (c, N)
        log_w = log_w.double()
        new_max = torch.maximum(running_max, log_w.max(0).values)
        running_sum = running_sum * (running_max - new_max).exp() + (log_w - new_max).exp().sum(0)
        running_max = new_max
    return running_max + running_sum.log() - math.log(num_samples)


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


def compiled_runner(model, guide, x: torch.Tensor, num_samples: int, chunk: int):
    """The hand-written IW estimate with its per-chunk function under ``torch.compile``: a
    callable that returns the (N,) estimates. Its first calls compile (one graph per chunk
    size): warm it up before timing."""
    encoder, decoder = guide.encoder, model.decoder
    compiled = torch.compile(lambda eps: _chunk_log_weights(encoder, decoder, x, eps))

    @torch.no_grad()
    def run() -> torch.Tensor:
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

    return run


def jax_runner(model, guide, x_torch: torch.Tensor, num_samples: int, chunk: int):
    """The same estimate written in JAX, the chunk function under ``jax.jit``: a callable that
    returns the (N,) estimates. Its first calls compile: warm it up before timing."""
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(x_torch.numpy())
    encoder, decoder = _jax_layers(guide.encoder), _jax_layers(model.decoder)

    @jax.jit
    def chunk_log_weights(key, size_array):
        out = _jax_mlp(encoder, x)
        loc, scale = out[:, :LATENT_DIM], jax.nn.softplus(out[:, LATENT_DIM:]) + MIN_SCALE
        eps = jax.random.normal(key, (size_array.shape[0], *loc.shape))
        z = loc + scale * eps
        logits = _jax_mlp(decoder, z)
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

    return run


def _jax_layers(network: torch.nn.Sequential) -> list[tuple]:
    """The (weight, bias) of each linear layer of a torch MLP, as JAX arrays (x @ weight)."""
    import jax.numpy as jnp

    return [
        (jnp.asarray(m.weight.detach().numpy().T), jnp.asarray(m.bias.detach().numpy()))
        for m in network
        if isinstance(m, torch.nn.Linear)
    ]


def _jax_mlp(params: list, h):
    """The tanh MLP of ``common.digits_vae`` on JAX arrays."""
    import jax.numpy as jnp

    for weight, bias in params[:-1]:
        h = jnp.tanh(h @ weight + bias)
    weight, bias = params[-1]
    return h @ weight + bias


def numpyro_svi_step(num_particles: int, batch_size: int, steps: int, warmup: int) -> float:
    """Seconds per step of NumPyro's SVI with ``Trace_ELBO`` on the digits VAE (the same
    initial weights, the same batch size), the update under ``jax.jit``, from step ``warmup``
    on: what a researcher gets from NumPyro's idiom."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO

    model_torch, guide_torch = digits_vae()
    x_all = digits().numpy()
    num_data = x_all.shape[0]
    decoder_init = _jax_layers(model_torch.decoder)
    encoder_init = _jax_layers(guide_torch.encoder)

    def model(x):
        decoder = numpyro.param("decoder", decoder_init)
        with numpyro.plate("data", num_data, subsample_size=x.shape[0]):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([LATENT_DIM]).to_event(1))
            numpyro.sample("x", dist.Bernoulli(logits=_jax_mlp(decoder, z)).to_event(1), obs=x)

    def guide(x):
        encoder = numpyro.param("encoder", encoder_init)
        out = _jax_mlp(encoder, x)
        loc, scale = out[:, :LATENT_DIM], jax.nn.softplus(out[:, LATENT_DIM:]) + MIN_SCALE
        with numpyro.plate("data", num_data, subsample_size=x.shape[0]):
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True)
    svi = SVI(model, guide, numpyro.optim.Adam(1e-3), elbo)
    rng = np.random.default_rng(0)
    batch = jnp.asarray(x_all[rng.permutation(num_data)[:batch_size]])
    state = svi.init(jax.random.PRNGKey(0), batch)
    update = jax.jit(svi.update)
    for step in range(steps):
        if step == warmup:
            jax.block_until_ready(state)
            start = time.perf_counter()
        batch = jnp.asarray(x_all[rng.permutation(num_data)[:batch_size]])
        state, _ = update(state, batch)
    jax.block_until_ready(state)
    return (time.perf_counter() - start) / (steps - warmup)


def main() -> None:
    torch.set_num_threads(2)
    model, guide = digits_vae()
    x = digits()
    chunk = default_chunk(x.shape[0])
    runs = {
        "handwritten": lambda: handwritten_iw(model, guide, x, 1000, chunk),
        "handwritten_compiled": compiled_runner(model, guide, x, 1000, chunk),
        "jax_jit": jax_runner(model, guide, x, 1000, chunk),
    }
    print("IW, K = 1000, seconds:", interleaved_seconds(runs, repeats=3, warmup=2))
    for num_particles in (1, 8):
        ms = 1e3 * numpyro_svi_step(num_particles, batch_size=128, steps=250, warmup=50)
        print(f"NumPyro jitted SVI step, {num_particles} particle(s): {ms:.2f} ms")


if __name__ == "__main__":
    main()
