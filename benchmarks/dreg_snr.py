"""Benchmark: the signal-to-noise ratio of IWAE's encoder gradient against K, plain and DReG.

Rainforth et al. (2018, "Tighter variational bounds are not necessarily better") show that
the plain IWAE gradient of the encoder has a signal-to-noise ratio |E g| / std(g) that falls
like 1 / sqrt(K); the doubly reparameterised gradient (DReG, Tucker et al., 2019) has one
that grows like sqrt(K). Here, at a fixed parameter setting (a linear-Gaussian model, D = 6
and k = 2, and a linear mean-field encoder, trained together 300 ELBO steps), each K in
:data:`PARTICLES` draws ``--draws`` independent gradients of one point's loss; the figure is
the SNR of each component of the encoder's output bias (k means, k scales), averaged over the
2k components. One call makes all the draws: the point repeated once per draw, each copy with
its own encoder output, whose gradient is that copy's bias gradient.

    python -m benchmarks.dreg_snr [--draws 2000] [--out benchmarks/dreg_snr.json]
"""

from __future__ import annotations

import argparse
import json
import time

import pyro
import torch

from guides import AmortizedGaussian
from inference import fit
from inference._programs import inspect_pair
from inference.training.objectives import IWAE, IWAE_GRADIENTS
from lvm_models import LinearGaussian
from lvm_models._nn import output_layer

PARTICLES = (1, 3, 10, 30, 100)
DATA_DIM, LATENT_DIM = 6, 2


def encoder_output_gradients(
    model: LinearGaussian,
    guide: AmortizedGaussian,
    x: torch.Tensor,
    num_particles: int,
    gradient: str,
    seed: int,
) -> torch.Tensor:
    """The gradient of the IWAE loss of ``x`` (N, D), with ``num_particles`` particles and
    the estimator ``gradient``, with respect to the guide's encoder output of each row:
    (N, 2k). Rows draw independently, so with one point repeated N times row n is the
    encoder's output-bias gradient of the n-th independent draw of that point's loss."""
    info = inspect_pair(model, guide, x, vectorize=True)
    outputs = []
    layer = output_layer(guide.encoder)
    handle = layer.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    try:
        pyro.set_rng_seed(seed)
        loss = IWAE(num_particles, gradient=gradient).loss(info)(model, guide, x)
    finally:
        handle.remove()
    # DReG runs the encoder twice (the draw, and the replay at the draw held fixed).
    return sum(torch.autograd.grad(loss, outputs))  # (N, 2k)


def signal_to_noise(gradients: torch.Tensor) -> torch.Tensor:
    """|mean| / standard deviation of each column of (draws, components) gradients."""
    return gradients.mean(0).abs() / gradients.std(0)


def trained_pair(seed: int = 0) -> tuple[LinearGaussian, AmortizedGaussian, torch.Tensor]:
    """A linear-Gaussian model and its linear encoder after 300 ELBO steps on 200 of the
    model's points, and the first of them."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(DATA_DIM, LATENT_DIM, generator=generator, dtype=torch.float64)
    model = LinearGaussian.from_params(weight, torch.zeros(DATA_DIM, dtype=torch.float64), 0.5)
    torch.manual_seed(seed)
    x = model.sample(200)
    guide = AmortizedGaussian(DATA_DIM, LATENT_DIM, hidden=()).double()
    fit(model, guide, x, steps=300, lr=0.05, seed=seed, progress=False)
    return model, guide, x[:1]


def run(draws: int, seed: int = 0) -> dict[str, object]:
    model, guide, point = trained_pair(seed)
    copies = point.expand(draws, -1)
    rows = []
    for num_particles in PARTICLES:
        row = {"num_particles": num_particles}
        for gradient in IWAE_GRADIENTS:
            gradients = encoder_output_gradients(
                model, guide, copies, num_particles, gradient, seed
            )
            row[gradient] = signal_to_noise(gradients).mean().item()
        rows.append(row)
    return {"draws": draws, "rows": rows}


def table(result: dict[str, object]) -> str:
    lines = [f"{'K':>5} {'plain':>9} {'dreg':>9}   (encoder gradient SNR, |E g| / std g)"]
    for row in result["rows"]:
        lines.append(f"{row['num_particles']:>5} {row['plain']:>9.3f} {row['dreg']:>9.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/dreg_snr.json")
    arguments = parser.parse_args()
    start = time.perf_counter()
    result = run(arguments.draws)
    result["seconds"] = time.perf_counter() - start
    print(table(result))
    with open(arguments.out, "w") as file:
        json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
