"""Tumour classifiers: paper 000's small CNN, ResNet-18/50 (paper 004), MobileNetV2 (001/002).

`build(name, image_size)` returns one by name (`classifier.model` in the study configs).

The small binary CNN of paper 000 (Rane 2026) scores real vs augmented training sets.

Paper 000 describes "two convolutional layers with max pooling, followed by a dense layer and a
sigmoid output", trained with class weights for 10 epochs at batch 32. The filter counts and
hidden width are not given; we use the common Keras-tutorial values (32 and 64 filters of 3x3,
a 128-unit hidden layer with dropout 0.5) and Keras' default "VALID" padding. The module returns
one logit per image (apply a sigmoid for the tumour probability). Its penultimate activations
(`return_features=True`) are the embedding used for the "domain FID" in the eval module.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from jaxsynth.models.layers import max_pool_2x2


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
            x = max_pool_2x2(x)
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


# ----------------------------------------------------------------------------- the wider zoo
# Papers 001/002/004 score synthetic data with ImageNet-family classifiers. These follow the
# torchvision definitions (layer counts, widths, BatchNorm momentum 0.9 / eps 1e-5, zero-init of
# the last BN scale in each residual branch as in Goyal et al.) and return one logit per image,
# like `PaperCNN`. Patches of 16-64 px are far smaller than ImageNet's 224: `small_input=True`
# (the default below 64 px, see `build`) swaps the 7x7/stride-2 stem + max-pool for a 3x3/stride-1
# stem (the CIFAR variant of He et al. 2016), so a 32-px patch is not reduced to 1x1 by layer 3.
_BN = dict(momentum=0.9, epsilon=1e-5)


class _BasicBlock(nn.Module):
    """ResNet-18/34 block: two 3x3 convs, identity (or 1x1 projection) shortcut."""

    width: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, **_BN)
        y = nn.Conv(self.width, (3, 3), (self.stride, self.stride), padding=1, use_bias=False)(x)
        y = nn.relu(norm()(y))
        y = nn.Conv(self.width, (3, 3), padding=1, use_bias=False)(y)
        y = norm(scale_init=nn.initializers.zeros)(y)
        if x.shape != y.shape:
            x = nn.Conv(self.width, (1, 1), (self.stride, self.stride), use_bias=False)(x)
            x = norm()(x)
        return nn.relu(x + y)


class _Bottleneck(nn.Module):
    """ResNet-50 block: 1x1 reduce, 3x3 (carries the stride, as torchvision v1.5), 1x1 expand x4."""

    width: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, **_BN)
        y = nn.relu(norm()(nn.Conv(self.width, (1, 1), use_bias=False)(x)))
        y = nn.Conv(self.width, (3, 3), (self.stride, self.stride), padding=1, use_bias=False)(y)
        y = nn.relu(norm()(y))
        y = nn.Conv(self.width * 4, (1, 1), use_bias=False)(y)
        y = norm(scale_init=nn.initializers.zeros)(y)
        if x.shape != y.shape:
            x = nn.Conv(self.width * 4, (1, 1), (self.stride, self.stride), use_bias=False)(x)
            x = norm()(x)
        return nn.relu(x + y)


def _stem(x, width: int, small_input: bool, train: bool):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, **_BN)
    if small_input:
        return nn.relu(norm()(nn.Conv(width, (3, 3), padding=1, use_bias=False)(x)))
    x = nn.relu(norm()(nn.Conv(width, (7, 7), (2, 2), padding=3, use_bias=False)(x)))
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ResNet(nn.Module):
    """ResNet-18 (`stage_sizes=(2, 2, 2, 2)`, basic blocks) or ResNet-50 (`(3, 4, 6, 3)`,
    bottlenecks), global average pool, one logit. `train=True` uses batch statistics and
    updates the `batch_stats` collection (apply with `mutable=["batch_stats"]`)."""

    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    bottleneck: bool = False
    base_width: int = 64
    small_input: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        block = _Bottleneck if self.bottleneck else _BasicBlock
        x = _stem(x, self.base_width, self.small_input, train)
        for i, n in enumerate(self.stage_sizes):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                x = block(self.base_width * 2**i, stride)(x, train)
        features = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(1)(features)[:, 0]
        return (logits, features) if return_features else logits

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """Global-average-pooled last-stage activations (N, C), inference mode."""
        return self(x, train=False, return_features=True)[1]


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection;
    residual when the shape is kept."""

    out: int
    stride: int
    expand: int

    @nn.compact
    def __call__(self, x, train: bool):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, **_BN)
        c = x.shape[-1]
        y = x
        if self.expand != 1:
            y = nn.relu6(norm()(nn.Conv(c * self.expand, (1, 1), use_bias=False)(y)))
        hidden = y.shape[-1]
        y = nn.Conv(
            hidden,
            (3, 3),
            (self.stride, self.stride),
            padding=1,
            feature_group_count=hidden,
            use_bias=False,
        )(y)
        y = nn.relu6(norm()(y))
        y = norm()(nn.Conv(self.out, (1, 1), use_bias=False)(y))
        return x + y if self.stride == 1 and c == self.out else y


# (expansion t, output channels c, repeats n, first stride s): Sandler et al. 2018, table 2.
_MBV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
         (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def _divisible(v: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible`: round to a multiple of 8, never below 90 % of `v`."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class MobileNetV2(nn.Module):
    """MobileNetV2 (width multiplier `alpha`), one logit. With `small_input` the stem and the
    second stage keep stride 1 (as CIFAR ports do), so 32-px patches end at 4x4, not 1x1."""

    alpha: float = 1.0
    small_input: bool = True
    dropout_rate: float = 0.2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, **_BN)
        stem_stride = 1 if self.small_input else 2
        x = nn.Conv(_divisible(32 * self.alpha), (3, 3), (stem_stride,) * 2, padding=1,
                    use_bias=False)(x)  # fmt: skip
        x = nn.relu6(norm()(x))
        for k, (t, c, n, s) in enumerate(_MBV2):
            if self.small_input and k == 1:
                s = 1
            for j in range(n):
                x = _InvertedResidual(_divisible(c * self.alpha), s if j == 0 else 1, t)(x, train)
        last = _divisible(1280 * max(1.0, self.alpha))
        x = nn.relu6(norm()(nn.Conv(last, (1, 1), use_bias=False)(x)))
        features = jnp.mean(x, axis=(1, 2))
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
        logits = nn.Dense(1)(h)[:, 0]
        return (logits, features) if return_features else logits

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """Global-average-pooled last 1x1-conv activations (N, 1280·max(1, alpha))."""
        return self(x, train=False, return_features=True)[1]


MODELS = ("paper_cnn", "resnet18", "resnet50", "mobilenet_v2")


def build(name: str, image_size: int = 32) -> nn.Module:
    """The classifier called `name` (one of `MODELS`) for square `image_size` patches."""
    small = image_size < 64
    if name == "paper_cnn":
        return PaperCNN()
    if name == "resnet18":
        return ResNet((2, 2, 2, 2), bottleneck=False, small_input=small)
    if name == "resnet50":
        return ResNet((3, 4, 6, 3), bottleneck=True, small_input=small)
    if name == "mobilenet_v2":
        return MobileNetV2(small_input=small)
    raise ValueError(f"unknown classifier '{name}' (one of {', '.join(MODELS)})")


def build_from_config(cfg, image_size: int) -> nn.Module:
    """The classifier named by `cfg.model` (a config's `classifier` group); an unknown name is a
    one-line error naming the key."""
    from jaxsynth.errors import UserError

    if cfg.model not in MODELS:
        raise UserError(f"classifier.model='{cfg.model}': unknown (one of {', '.join(MODELS)})")
    return build(cfg.model, image_size)


def has_batch_stats(model: nn.Module) -> bool:
    """Whether `model` keeps BatchNorm running statistics (a `batch_stats` collection)."""
    return not isinstance(model, PaperCNN)
