"""A small convolutional backbone for the embedded dataset and tests (CPU friendly)."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages (stride 2 after the first), global average pool -> (N, widths[-1])."""

    widths: Sequence[int] = (32, 64, 128)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC, train: bool = False):
        h = x_NHWC.astype(self.dtype)
        for i, w in enumerate(self.widths):
            h = nn.Conv(w, (3, 3), strides=1 if i == 0 else 2, padding=((1, 1), (1, 1)),
                        use_bias=False, dtype=self.dtype)(h)
            h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype)(h)
            h = nn.relu(h)
        return jnp.mean(h, axis=(1, 2))
