"""Feature spaces by name: `inception:PATH | hf-vit:DIR | timm-vit:DIR | ssl:DIR | pixels`.

Why one parser: `jaxsynth eval --extractor ...` and the study's `eval.extractors` list must
mean the same thing by the same string, and every report key (`fd_<name>`, `kid_<name>`,
`prdc_<name>`) must say which space a number was computed in. Each extractor maps uint8
images (N, H, W, 3) to float64 features (N, D) and has an `id` that keys the feature caches
on the weights' content (SHA-256 of the weight file), so a cache never mixes two networks.

* `VitExtractor`: a published ViT (Phikon, DINOv2, UNI, H-optimus, ...) read by
  `vit_weights.load_vit`, with its model card's preprocessing (resize, centre crop,
  normalisation) inside the jitted function; CLS, mean-patch or both as the feature.
* `SslExtractor`: the self-supervised encoder the stack trains itself (`tasks/ssl.py`), saved as
  `encoder.npz` + `encoder.json` in a folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsynth.errors import UserError
from jaxsynth.eval.features import _batched

KINDS = ("inception", "hf-vit", "timm-vit", "ssl", "domain", "pixels")


def _resize_crop(x: jax.Array, resize: int, crop: int, method: str) -> jax.Array:
    """Square tiles: resize to `resize` (antialiased, like PIL), then centre-crop `crop`."""
    b, h, w, c = x.shape
    if (h, w) != (resize, resize):
        x = jax.image.resize(x, (b, resize, resize, c), method, antialias=True)
    top = (resize - crop) // 2
    return x[:, top : top + crop, top : top + crop]


class VitExtractor:
    """Features of a local ViT checkpoint folder (`layout` "hf" or "timm")."""

    def __init__(
        self,
        folder: str | Path,
        layout: str,
        pool: str = "cls",
        batch_size: int = 32,
        input_size: int | None = None,
        log: bool = False,
    ):
        from jaxsynth.eval.vit_weights import load_vit
        from jaxsynth.models.vit import POOLS, VisionTransformer, pool_tokens

        if pool not in POOLS:
            raise UserError(f"pool={pool!r}: choose from {', '.join(POOLS)}")
        self.loaded = load_vit(folder, layout, input_size)
        pre, spec = self.loaded.preprocess, self.loaded.spec
        model = VisionTransformer(spec)
        params = jax.tree.map(jnp.asarray, self.loaded.params)
        mean = jnp.asarray(pre.mean, jnp.float32)
        std = jnp.asarray(pre.std, jnp.float32)
        method = "cubic" if pre.interpolation == "bicubic" else "linear"

        @jax.jit
        def run(images_uint8):
            x = images_uint8.astype(jnp.float32) / 255.0
            x = _resize_crop(x, pre.resize, pre.crop, method)
            tokens = model.apply({"params": params}, (x - mean) / std)
            return pool_tokens(tokens, pool, spec.num_registers)

        self._fn = run
        self.tokens = jax.jit(lambda x: model.apply({"params": params}, x))
        self.batch_size = batch_size
        self.log = log
        self.dim = spec.dim * (2 if pool == "cls+mean" else 1)
        self.id = f"{layout}-vit:{self.loaded.weights_sha256[:16]}:{pool}:{pre.crop}"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return _batched(self._fn, np.asarray(images, np.uint8), self.batch_size, self.log)


class SslExtractor:
    """The stack's own self-supervised encoder (`jaxsynth.tasks.ssl`) from a saved folder."""

    def __init__(self, folder: str | Path, batch_size: int = 64):
        from jaxsynth.models.ssl_encoder import SslEncoder

        folder = Path(folder)
        meta_path, npz_path = folder / "encoder.json", folder / "encoder.npz"
        for p in (meta_path, npz_path):
            if not p.is_file():
                raise UserError(f"{p}: missing (train one with the ssl_encoder config)")
        try:
            meta = json.loads(meta_path.read_text())
            widths = tuple(int(w) for w in meta["widths"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{meta_path}: not an encoder description ({e})") from None
        with np.load(npz_path) as z:
            flat = {k: z[k] for k in z.files}
        params = _unflatten(flat)
        self.model = SslEncoder(widths=widths, proj_dim=int(meta.get("proj_dim", 128)))
        size = int(meta["image_size"])
        want = jax.eval_shape(
            self.model.init,
            jax.random.key(0),
            jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
        )["params"]
        if jax.tree.structure(want) != jax.tree.structure(params) or any(
            a.shape != b.shape for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(params))
        ):
            raise UserError(f"{npz_path}: wrong shapes for the widths in {meta_path.name}")
        params = jax.tree.map(jnp.asarray, params)
        model = self.model
        self.image_size = size
        self._fn = jax.jit(
            lambda x: model.apply(
                {"params": params}, x.astype(jnp.float32) / 127.5 - 1.0, method=model.features
            )
        )
        self.batch_size = batch_size
        digest = hashlib.sha256(npz_path.read_bytes()).hexdigest()[:16]
        self.id = f"ssl:{digest}"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, np.uint8)
        if x.shape[1:3] != (self.image_size, self.image_size):
            x = np.asarray(
                jax.image.resize(
                    x.astype(np.float32),
                    (len(x), self.image_size, self.image_size, 3),
                    "linear",
                    antialias=True,
                )
            )
        return _batched(self._fn, x, self.batch_size, False)


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


@dataclasses.dataclass(frozen=True)
class ExtractorSpec:
    kind: str
    path: str = ""
    name: str = ""  # report-key suffix: fd_<name>


def parse_extractor(text: str) -> ExtractorSpec:
    """`KIND[:PATH]` -> spec; one-line error for an unknown kind or a missing path."""
    kind, _, path = str(text).partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise UserError(f"--extractor {text!r}: unknown kind {kind!r}; choose from {KINDS}")
    needs_path = kind in ("inception", "hf-vit", "timm-vit", "ssl")
    if needs_path and not path:
        raise UserError(f"--extractor {text!r}: {kind} needs a path ({kind}:PATH)")
    if not needs_path and path:
        raise UserError(f"--extractor {text!r}: {kind} takes no path")
    if needs_path and not Path(path).exists():
        raise UserError(f"--extractor {text!r}: {path}: no such file or folder")
    return ExtractorSpec(kind, path, kind)


def name_specs(specs: list[ExtractorSpec]) -> list[ExtractorSpec]:
    """Report names: the kind, or kind_<folder name> when a kind appears more than once."""
    counts: dict[str, int] = {}
    for s in specs:
        counts[s.kind] = counts.get(s.kind, 0) + 1
    out, seen = [], set()
    for s in specs:
        name = s.kind
        if counts[s.kind] > 1:
            stem = re.sub(r"[^A-Za-z0-9]+", "-", Path(s.path).name).strip("-") or "x"
            name = f"{s.kind}_{stem}"
        if name in seen:
            raise UserError(f"--extractor {s.kind}:{s.path}: given twice")
        seen.add(name)
        out.append(dataclasses.replace(s, name=name))
    return out


def build_extractor(
    spec: ExtractorSpec,
    *,
    cache_dir: str | None = None,
    batch_size: int = 32,
    pool: str = "cls",
    domain=None,
    log: bool = False,
):
    """The extractor object for a parsed spec. `domain` is a ready `DomainExtractor` (the
    caller trains it: only the study has the labelled training split it needs)."""
    from jaxsynth.eval.features import InceptionExtractor, PixelExtractor

    if spec.kind == "inception":
        return InceptionExtractor(spec.path, cache_dir, batch_size=batch_size, log=log)
    if spec.kind in ("hf-vit", "timm-vit"):
        layout = "hf" if spec.kind == "hf-vit" else "timm"
        return VitExtractor(spec.path, layout, pool=pool, batch_size=batch_size, log=log)
    if spec.kind == "ssl":
        return SslExtractor(spec.path, batch_size=batch_size)
    if spec.kind == "pixels":
        return PixelExtractor(16)
    if domain is None:
        raise UserError(
            "--extractor domain: the domain CNN needs the labelled training split; it is "
            "available in `jaxsynth study` (config.eval.extractors), use ssl:DIR here"
        )
    return domain
