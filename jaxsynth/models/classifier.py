"""The small binary CNN of paper 000 (Rane 2026), used to score real vs augmented training sets.

Paper 000 describes "two convolutional layers with max pooling, followed by a dense layer and a
sigmoid output", trained with class weights for 10 epochs at batch 32. The filter counts and
hidden width are not given; we use the common Keras-tutorial values (32 and 64 filters of 3x3,
a 128-unit hidden layer with dropout 0.5) and Keras' default "VALID" padding. The module returns
one logit per image (apply a sigmoid for the tumour probability). Its penultimate activations
(`return_features=True`) are the embedding used for the "domain FID" in the eval module.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class PaperCNN(nn.Module):
    """conv3x3(32)-relu-maxpool2 -> conv3x3(64)-relu-maxpool2 -> dense(128)-relu-dropout -> 1.

    Input: float32 NHWC in [-1, 1]. Output: logits (N,), or (logits, features (N, hidden)) with
    `return_features=True`. `train=True` enables dropout (needs a "dropout" rng).
    """

    filters: tuple[int, ...] = (32, 64)
    hidden: int = 128
    dropout_rate: float = 0.5
    padding: str = "VALID"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        for width in self.filters:
            x = nn.Conv(width, (3, 3), padding=self.padding)(x)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        features = nn.relu(nn.Dense(self.hidden)(x))
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
        logits = nn.Dense(1)(h)[:, 0]
        if return_features:
            return logits, features
        return logits

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """Penultimate (post-ReLU hidden layer) activations, deterministic: (N, hidden)."""
        return self(x, train=False, return_features=True)[1]
