"""Feature networks for the perceptual loss of pix2pix (paper 004: "perceptual loss computed via a
pretrained VGG19").

* `VGG19Features`: torchvision's `vgg19().features` (16 3×3 convs, 4 max pools), returning the
  activations after relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 (Johnson et al. / pix2pixHD
  taps). Weights come only from a local torchvision `.pth` the user gives, read without torch by
  `jaxsynth.eval.torch_weights`, mapped here by `vgg19_params_from_state_dict`.
* `RandomFeatures`: the stated fallback when no VGG weights are given: a small fixed, randomly
  initialised CNN (3 convs, never trained). Random conv features still measure local structure
  and texture; it is weaker than an ImageNet VGG and is named as such in every report.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# torchvision vgg19 "E" configuration; "M" = 2×2 max pool.
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
             512, 512, 512, 512)  # fmt: skip
VGG19_TAPS = (0, 2, 4, 8, 12)  # conv indices (0-based, convs only) whose ReLU output is a tap
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def torch_conv_indices() -> list[int]:
    """Index of each conv inside torchvision's `features` Sequential (conv, relu[, pool])."""
    out, i = [], 0
    for v in VGG19_CFG:
        if v == "M":
            i += 1
        else:
            out.append(i)
            i += 2
    return out


class VGG19Features(nn.Module):
    """images float32 [-1, 1] (B, H, W, 3) -> list of the 5 tap activations."""

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
        h = ((x + 1.0) / 2.0 - mean) / std
        taps, conv = [], 0
        for v in VGG19_CFG:
            if v == "M":
                h = nn.max_pool(h, (2, 2), (2, 2))
                continue
            h = nn.relu(nn.Conv(int(v), (3, 3), padding=((1, 1), (1, 1)), name=f"conv{conv}")(h))
            if conv in VGG19_TAPS:
                taps.append(h)
            conv += 1
        return taps


def vgg19_params_from_state_dict(state_dict: Mapping[str, np.ndarray], source: str) -> dict:
    """torchvision `features.{i}.weight` (O, I, 3, 3) / `.bias` -> `VGG19Features` params.

    A missing key or a wrong shape raises ValueError naming `source` and the key.
    """
    params, widths, c_in = {}, [v for v in VGG19_CFG if v != "M"], 3
    for n, idx in enumerate(torch_conv_indices()):
        w_key, b_key = f"features.{idx}.weight", f"features.{idx}.bias"
        for key in (w_key, b_key):
            if key not in state_dict:
                raise ValueError(f"{source}: no '{key}' (is it torchvision's vgg19 .pth?)")
        w, b = np.asarray(state_dict[w_key]), np.asarray(state_dict[b_key])
        if w.shape != (widths[n], c_in, 3, 3) or b.shape != (widths[n],):
            raise ValueError(f"{source}: '{w_key}' has shape {w.shape}, want {(widths[n], c_in)}")
        params[f"conv{n}"] = {
            "kernel": jnp.asarray(w.transpose(2, 3, 1, 0), jnp.float32),  # OIHW -> HWIO
            "bias": jnp.asarray(b, jnp.float32),
        }
        c_in = widths[n]
    return params


class RandomFeatures(nn.Module):
    """The no-weights fallback: a fixed random 3-layer CNN, taps after each ReLU."""

    widths: tuple[int, ...] = (32, 64, 128)

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        taps, h = [], x
        for i, w in enumerate(self.widths):
            stride = 1 if i == 0 else 2
            init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
            h = nn.Conv(w, (3, 3), (stride, stride), padding=((1, 1), (1, 1)), kernel_init=init,
                        name=f"conv{i}")(h)  # fmt: skip
            h = nn.relu(h)
            taps.append(h)
        return taps


def perceptual_distance(taps_a: list[jax.Array], taps_b: list[jax.Array]) -> jax.Array:
    """Mean over taps of the mean absolute feature difference (pix2pixHD's VGG loss, equal
    weights)."""
    return jnp.mean(
        jnp.stack([jnp.mean(jnp.abs(a - b)) for a, b in zip(taps_a, taps_b, strict=True)])
    )
