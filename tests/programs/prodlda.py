"""Pyro's ProdLDA tutorial (``tutorial/source/prodlda.ipynb``; Srivastava and Sutton, 2017),
written as there.

Documents are bags of words: here an 8x8 digit is a document over a 64-word vocabulary whose
word counts are its pixel intensities (0..16). ``pyro.plate("documents", docs.shape[0])``;
a logistic-normal topic mixture ``logtheta ~ Normal(0, I)``, ``theta = softmax(logtheta)``;
a decoder ``softmax(BatchNorm1d(beta theta), dim=1)`` and a ``Multinomial`` likelihood; an
encoder with ``BatchNorm1d`` on its outputs. Both networks have dropout, as the tutorial's.
In training mode BatchNorm normalises over the batch; evaluate with the module in ``eval()``
mode, so that each document's density depends on that document alone.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F


def digit_documents(pixels: torch.Tensor) -> torch.Tensor:
    """Word counts (N, 64): each image's pixel intensities."""
    return pixels.reshape(pixels.shape[0], -1).round()


class Encoder(nn.Module):
    # Base class for the encoder net, used in the guide
    def __init__(self, vocab_size: int, num_topics: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)  # to avoid component collapse
        self.fc1 = nn.Linear(vocab_size, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fcmu = nn.Linear(hidden, num_topics)
        self.fclv = nn.Linear(hidden, num_topics)
        # affine=False, as the tutorial, to reduce the number of learnt parameters
        self.bnmu = nn.BatchNorm1d(num_topics, affine=False)  # to avoid component collapse
        self.bnlv = nn.BatchNorm1d(num_topics, affine=False)  # to avoid component collapse

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.softplus(self.fc1(inputs))
        h = F.softplus(self.fc2(h))
        h = self.drop(h)
        logtheta_loc = self.bnmu(self.fcmu(h))
        logtheta_logvar = self.bnlv(self.fclv(h))
        logtheta_scale = (0.5 * logtheta_logvar).exp()  # Enforces positivity
        return logtheta_loc, logtheta_scale


class Decoder(nn.Module):
    # Base class for the decoder net, used in the model
    def __init__(self, vocab_size: int, num_topics: int, dropout: float) -> None:
        super().__init__()
        self.beta = nn.Linear(num_topics, vocab_size, bias=False)
        self.bn = nn.BatchNorm1d(vocab_size, affine=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        inputs = self.drop(inputs)
        # the output is softmax(beta theta)
        return F.softmax(self.bn(self.beta(inputs)), dim=1)


class ProdLDA(nn.Module):
    def __init__(self, vocab_size: int, num_topics: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.num_topics = num_topics
        self.encoder = Encoder(vocab_size, num_topics, hidden, dropout)
        self.decoder = Decoder(vocab_size, num_topics, dropout)

    def model(self, docs: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("documents", docs.shape[0]):
            # the Dirichlet prior p(theta given alpha) is replaced by a logistic normal
            logtheta_loc = docs.new_zeros((docs.shape[0], self.num_topics))
            logtheta_scale = docs.new_ones((docs.shape[0], self.num_topics))
            logtheta = pyro.sample(
                "logtheta", dist.Normal(logtheta_loc, logtheta_scale).to_event(1)
            )
            theta = F.softmax(logtheta, -1)

            # w_n given beta, theta ~ Categorical(softmax(beta theta))
            count_param = self.decoder(theta)
            # Multinomial needs one total_count; its log_prob does not use it, so the
            # tutorial takes the largest document's.
            total_count = int(docs.sum(-1).max())
            pyro.sample("obs", dist.Multinomial(total_count, count_param), obs=docs)

    def guide(self, docs: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("documents", docs.shape[0]):
            # the encoder gives the logistic normal's mu and Sigma
            logtheta_loc, logtheta_scale = self.encoder(docs)
            pyro.sample("logtheta", dist.Normal(logtheta_loc, logtheta_scale).to_event(1))
