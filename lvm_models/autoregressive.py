"""An autoregressive Bernoulli decoder conditioned on z: a VAE whose decoder is powerful.

p(x given z) = prod_d Bernoulli(x_d; sigmoid(f_d(x_<d, z))) with f a masked MLP in the style
of MADE (Germain et al., 2015) whose hidden layers also receive z. Ignoring z, such a decoder
is a fully expressive model of binary vectors, so the ELBO can be maximised without the
latent: the setting in which VAEs with autoregressive decoders are known to collapse
(Bowman et al., 2016; Chen et al., 2017).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pyro import distributions as dist
from pyro.distributions import constraints
from torch import nn

from lvm_models._base import LatentVariableModel
from lvm_models._nn import check_hidden


class AutoregressiveVAE(LatentVariableModel):
    """p(z) = N(0, I_k), p(x given z) = prod_d Bernoulli(x_d; sigmoid(f_d(x_<d, z))).

    The decoder :class:`ConditionalMADE` reads the pixels in their column order: the logit
    of pixel d is a function of z and of the pixels before d only (MADE, Germain et al.,
    2015; z enters every hidden layer through ordinary, unmasked linear maps).

    With z ignored this decoder is still a fully expressive autoregressive model of binary
    vectors: it can represent p_data without the latent, so it is *powerful* for binary
    data. Then the ELBO's global optimum ignores the latent (q = prior, the bound tight),
    and training tends to that collapsed solution: the posterior collapse of VAEs with
    autoregressive decoders reported by Bowman et al. (2016, "Generating Sentences from a
    Continuous Space") and explained by Chen et al. (2017, "Variational Lossy
    Autoencoder"). :meth:`ignore_latent` puts the decoder there by hand.

    :param int data_dim: D, the number of binary pixels.
    :param int latent_dim: k.
    :param hidden: widths of the decoder's masked hidden layers.
    """

    binary_data = True

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (256,)) -> None:
        super().__init__(data_dim, latent_dim)
        # Without a hidden unit z would reach no logit.
        self.hidden = check_hidden(hidden, allow_empty=False)
        self.decoder = ConditionalMADE(self.data_dim, self.latent_dim, self.hidden)

    def likelihood(self, z: torch.Tensor) -> AutoregressiveBernoulli:
        return AutoregressiveBernoulli(self.decoder, z)

    @torch.no_grad()
    def ignore_latent(self) -> None:
        """Cut every dependence of the decoder on z (zero its z-to-hidden weights)."""
        for layer in self.decoder.latent_layers:
            layer.weight.zero_()


class ConditionalMADE(nn.Module):
    """Logits f(x, z) of shape (..., D) with f_d a function of x_<d and z only.

    Degrees as in MADE (Germain et al., 2015): input pixel d has degree d in 1..D, a hidden
    unit of degree m sees the inputs of degree <= m, and output d sees the hidden units of
    degree < d, plus a direct, strictly lower-triangular input-to-output map. Hidden degrees
    cycle through 0..D-1: a unit of degree 0 sees z only, which is how the first pixel comes
    to depend on z (MADE proper has no such units, having nothing for them to see). Every
    hidden layer adds an unmasked linear map of z. tanh keeps the logits smooth in z, which
    the quadrature oracle relies on.

    :param int data_dim: D.
    :param int latent_dim: k.
    :param hidden: widths of the masked hidden layers.
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        input_degrees = torch.arange(1, data_dim + 1)
        degrees = [input_degrees] + [torch.arange(width) % data_dim for width in hidden]
        self.hidden_layers = nn.ModuleList(
            MaskedLinear(d_in, d_out) for d_in, d_out in zip(degrees[:-1], degrees[1:])
        )
        self.latent_layers = nn.ModuleList(
            nn.Linear(latent_dim, width, bias=False) for width in hidden
        )
        self.output_layer = MaskedLinear(degrees[-1], input_degrees, strict=True)
        self.direct_layer = MaskedLinear(input_degrees, input_degrees, strict=True, bias=False)

    def latent_terms(self, z: torch.Tensor) -> list[torch.Tensor]:
        """What z adds to each hidden layer's pre-activation: (..., width) per layer."""
        return [layer(z) for layer in self.latent_layers]

    def logits(self, x: torch.Tensor, latent_terms: list[torch.Tensor]) -> torch.Tensor:
        """Logits (broadcast of x's and z's batch shapes, D) from x (..., D) and the z terms."""
        h = x
        for layer, latent_term in zip(self.hidden_layers, latent_terms):
            h = torch.tanh(layer(h) + latent_term)
        return self.output_layer(h) + self.direct_layer(x)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logits (..., D) of p(x_d = 1 given x_<d, z) for x (..., D), z (..., k)."""
        return self.logits(x, self.latent_terms(z))


class MaskedLinear(nn.Linear):
    """A linear map whose weight from input i to output j is kept only where the degrees allow.

    Kept where ``out_degrees[j] >= in_degrees[i]``, or ``>`` with ``strict=True``. The mask is
    a buffer: it moves with ``.to`` / ``.double()`` and is saved in the ``state_dict``.
    """

    def __init__(
        self,
        in_degrees: torch.Tensor,
        out_degrees: torch.Tensor,
        strict: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__(len(in_degrees), len(out_degrees), bias=bias)
        difference = out_degrees.unsqueeze(1) - in_degrees.unsqueeze(0)  # (out, in)
        mask = difference > 0 if strict else difference >= 0
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class AutoregressiveBernoulli(dist.TorchDistribution):
    """prod_d Bernoulli(x_d; sigmoid(f_d(x_<d, z))) over binary vectors x of length D.

    ``log_prob`` is one pass of the network on (x, z); ``sample`` is D passes, pixel d drawn
    from the logit d of the pass that has pixels 0..d-1 filled in. Written by hand: Pyro and
    torch have no autoregressive Bernoulli.

    :param network: a :class:`ConditionalMADE` of D pixels and latent size k.
    :param z: latents of shape (..., k); the batch shape is ``z.shape[:-1]``, the event
        shape (D,).
    """

    arg_constraints = {"z": constraints.real_vector}
    support = constraints.independent(constraints.boolean, 1)
    has_rsample = False

    def __init__(
        self, network: ConditionalMADE, z: torch.Tensor, validate_args: bool | None = None
    ) -> None:
        self.network = network
        self.z = z
        super().__init__(z.shape[:-1], torch.Size([network.data_dim]), validate_args=validate_args)

    def expand(
        self, batch_shape: torch.Size, _instance: AutoregressiveBernoulli | None = None
    ) -> AutoregressiveBernoulli:
        z = self.z.expand(*batch_shape, self.z.shape[-1])
        return AutoregressiveBernoulli(self.network, z, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(x given z) in nats for x (..., D): shape broadcast(x's batch, z's batch)."""
        if self._validate_args:
            self._validate_sample(value)
        logits = self.network(value, self.z)  # (..., D)
        # log Bernoulli(x; sigmoid(l)) = x l - log(1 + e^l), which broadcasts x against z.
        return (value * logits - F.softplus(logits)).sum(-1)

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Binary x of shape ``sample_shape + batch_shape + (D,)``, one pixel per pass."""
        shape = self._extended_shape(sample_shape)
        z = self.z.expand(*shape[:-1], self.z.shape[-1])
        latent_terms = self.network.latent_terms(z)
        x = self.z.new_zeros(shape)
        for d in range(shape[-1]):
            logits = self.network.logits(x, latent_terms)[..., d]
            x[..., d] = torch.bernoulli(torch.sigmoid(logits))
        return x
