"""scikit-learn's 8x8 digits in the forms the programs' originals give MNIST.

The originals read MNIST (28x28, pixels 0..255); these read ``sklearn.datasets.load_digits``
(1797 images, 8x8, pixels 0..16), which ships with scikit-learn, so no test downloads data.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

NUM_PIXELS = 64
NUM_CLASSES = 10
MAX_PIXEL = 16.0


def images(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit as pixel intensities (1797, 1, 8, 8) in 0..16, and its label (1797,)."""
    digits = load_digits()
    pixels = torch.as_tensor(digits.images, dtype=dtype).unsqueeze(1)
    return pixels, torch.as_tensor(digits.target, dtype=torch.long)


def binarised(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels scaled to [0, 1] as MNISTCached does, then thresholded at 1/2: data a Bernoulli
    likelihood is a density of."""
    return (pixels / MAX_PIXEL > 0.5).to(pixels.dtype)


def one_hot(labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Labels (N,) as the one-hot rows (N, 10) that ss_vae_M2.py's data loader gives."""
    return torch.nn.functional.one_hot(labels, NUM_CLASSES).to(dtype)
