"""pytorch-fid's FID Inception v3 as a Flax module, and its weights read from the `.pth` file.

FID is only comparable across papers when every detail of the feature network matches the
reference (pytorch-fid, itself a port of the TF FID graph): torchvision's Inception v3 body
(BasicConv2d = bias-free conv + BatchNorm(eps=1e-3) + ReLU) with four patched blocks --
FIDInceptionA / FIDInceptionC / FIDInceptionE_1 average-pool WITHOUT counting the zero
padding, FIDInceptionE_2 max-pools instead -- fed by a bilinear resize to 299 x 299 without
antialiasing (torch's `align_corners=False`) and a `2x - 1` rescale, read out after the
global average pool (2048-d "pool3" features). Module and parameter names follow the torch
state-dict keys, so conversion is a rename plus an OIHW -> HWIO transpose.

Weights: `load_inception_params(path_to_pt_inception.pth, cache_dir)` reads the `.pth` with
our torch-free reader once and caches a Flax-native `.npz` keyed by the file's SHA-256.
Nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsynth.errors import UserError
from jaxsynth.eval.torch_weights import load_state_dict

BN_EPS = 1e-3
INPUT_SIZE = 299
FEATURE_DIM = 2048
PYTORCH_FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"


class BasicConv(nn.Module):
    """torchvision's BasicConv2d: conv (no bias) -> BatchNorm in inference mode -> ReLU."""

    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            self.kernel,
            strides=(self.stride, self.stride),
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            name="conv",
        )(x)
        c = self.features
        scope = "bn"
        gamma = self._bn_param(scope, "weight", c, nn.initializers.ones)
        beta = self._bn_param(scope, "bias", c, nn.initializers.zeros)
        mean = self._bn_param(scope, "running_mean", c, nn.initializers.zeros)
        var = self._bn_param(scope, "running_var", c, nn.initializers.ones)
        x = (x - mean) * (gamma / jnp.sqrt(var + BN_EPS)) + beta
        return nn.relu(x)

    def _bn_param(self, scope: str, name: str, c: int, init: Callable) -> jax.Array:
        # Flat names "bn.weight" etc. keep the torch key visible in the param tree.
        return self.param(f"{scope}.{name}", init, (c,))


def _avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
    """3x3 / stride 1 / pad 1 average that ignores the padding (TF's and pytorch-fid's)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class FIDInceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), stride=2, name="branch3x3")(x)
        bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
        bp = nn.max_pool(x, (3, 3), strides=(2, 2))
        return jnp.concatenate([b3, bd, bp], axis=-1)


class FIDInceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), stride=2, name="branch3x3_2")(b3)
        b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        bp = nn.max_pool(x, (3, 3), strides=(2, 2))
        return jnp.concatenate([b3, b7, bp], axis=-1)


class FIDInceptionE(nn.Module):
    """E_1 (avg pool, padding excluded) when `max_pool` is False, E_2 (max pool) when True."""

    max_pool: bool

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        if self.max_pool:  # max_pool pads with -inf, like torch's F.max_pool2d
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_exclude_pad(x)
        bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """Images (B, H, W, 3) in [0, 1] -> (B, 2048) pool3 features, exactly as pytorch-fid's
    `InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True)`."""

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = jnp.asarray(images, jnp.float32)
        b = x.shape[0]
        # antialias=False: torch's F.interpolate(bilinear, align_corners=False) does not
        # low-pass when downsampling; the default antialias=True would move FID.
        x = jax.image.resize(x, (b, INPUT_SIZE, INPUT_SIZE, 3), "bilinear", antialias=False)
        x = 2.0 * x - 1.0
        x = BasicConv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = FIDInceptionA(32, name="Mixed_5b")(x)
        x = FIDInceptionA(64, name="Mixed_5c")(x)
        x = FIDInceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = FIDInceptionC(128, name="Mixed_6b")(x)
        x = FIDInceptionC(160, name="Mixed_6c")(x)
        x = FIDInceptionC(160, name="Mixed_6d")(x)
        x = FIDInceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = FIDInceptionE(max_pool=False, name="Mixed_7b")(x)
        x = FIDInceptionE(max_pool=True, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


# ---------------------------------------------------------------------------------------------
# Parameter naming and conversion


@functools.lru_cache(maxsize=1)
def _param_shapes() -> dict[str, tuple[int, ...]]:
    """Flat Flax param names ("Mixed_5b/branch1x1/conv/kernel") -> shapes, without computing."""
    shapes = jax.eval_shape(
        FIDInceptionV3().init, jax.random.key(0), jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32)
    )
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes["params"])[0]:
        flat["/".join(k.key for k in path)] = tuple(leaf.shape)
    return flat


def _torch_key(flax_name: str) -> str:
    """ "Mixed_5b/branch1x1/conv/kernel" -> "Mixed_5b.branch1x1.conv.weight";
    "Mixed_5b/branch1x1/bn.running_mean" -> "Mixed_5b.branch1x1.bn.running_mean"."""
    parts = flax_name.split("/")
    if parts[-1] == "kernel":
        parts[-1] = "weight"
    return ".".join(parts)


def torch_state_dict_spec() -> dict[str, tuple[int, ...]]:
    """The torch state-dict keys and shapes the FID network uses (fc / counters excluded),
    in the order of the Flax param tree. Conv weights are in torch's (O, I, kH, kW) layout."""
    spec = {}
    for name, shape in _param_shapes().items():
        if name.endswith("kernel"):
            kh, kw, i, o = shape
            shape = (o, i, kh, kw)
        spec[_torch_key(name)] = shape
    return spec


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(value)
    return {"params": tree}


def params_from_state_dict(state_dict: dict[str, np.ndarray], source: str = "state dict") -> dict:
    """Convert a pytorch-fid Inception state dict (numpy arrays) into this module's variables.

    Every key the network needs must be present with the right shape; extra keys that the FID
    features do not use (`fc.*`, `AuxLogits.*`, BatchNorm `num_batches_tracked`) are ignored.
    """
    flat = {}
    for name, shape in _param_shapes().items():
        key = _torch_key(name)
        if key not in state_dict:
            raise UserError(f"{source}: missing tensor '{key}'; is this pytorch-fid's Inception?")
        value = np.asarray(state_dict[key], np.float32)
        if name.endswith("kernel"):
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if tuple(value.shape) != shape:
            raise UserError(f"{source}: tensor '{key}' has shape {value.shape}, expected {shape}")
        flat[name] = value
    return _unflatten(flat)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("JAXSYNTH_CACHE", Path.home() / ".cache" / "jaxsynth"))


def load_inception_params(weights_path: str | Path, cache_dir: str | Path | None = None) -> dict:
    """Variables for `FIDInceptionV3` from pytorch-fid's `.pth` at a local path.

    The first call converts and writes `<cache_dir>/fid_inception_<sha256[:16]>.npz`; later
    calls with the same file (by content) load that instead and need no pickle at all.
    """
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise UserError(
            f"--inception-weights {weights_path}: no such file (pytorch-fid's "
            f"{PYTORCH_FID_WEIGHTS_NAME}; download it yourself, nothing is fetched at run time)"
        )
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = _file_sha256(weights_path)[:16]
    cached = cache_dir / f"fid_inception_{digest}.npz"
    if cached.is_file():
        with np.load(cached) as z:
            return _unflatten({k: z[k] for k in z.files})
    try:
        state_dict = load_state_dict(weights_path)
    except Exception as e:  # corrupt / foreign files: one line naming the file
        raise UserError(f"--inception-weights {weights_path}: cannot read ({e})") from e
    variables = params_from_state_dict(state_dict, str(weights_path))
    cache_dir.mkdir(parents=True, exist_ok=True)
    flat = {
        "/".join(k.key for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    }
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, **flat)
    os.replace(tmp, cached)
    return variables


@jax.jit
def _apply(variables: dict, images: jax.Array) -> jax.Array:
    return FIDInceptionV3().apply(variables, images)


def make_feature_fn(variables: dict) -> Callable[[jax.Array], jax.Array]:
    """A jitted `images (B, H, W, 3) float in [0, 1] -> (B, 2048)` function.

    The weights are passed as an argument of one module-level jitted function (not closed
    over), so they are not baked into the program as constants and every extractor with the
    same input shape reuses one compilation."""
    return functools.partial(_apply, variables)
