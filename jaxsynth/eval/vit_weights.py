"""Published ViT encoders (Phikon, DINOv2, UNI, H-optimus, ...) from a local folder, without torch.

Why: the pathology encoders the field reports Fréchet distances in ship as PyTorch checkpoints
(`model.safetensors` or `pytorch_model.bin`) with a `config.json`; nothing may be downloaded at
run time and torch is not a dependency. This module reads such a folder into a
`jaxsynth.models.vit.VisionTransformer` (spec + params) and the preprocessing the model card
prescribes. Two layouts:

* `hf` -- Hugging Face `ViTModel` (Phikon) and `Dinov2Model` (Phikon-v2, DINOv2; SwiGLU and
  register-token variants too): `config.json` has `model_type` vit / dinov2 /
  dinov2_with_registers; preprocessing from `preprocessor_config.json` when present.
* `timm` -- timm `VisionTransformer` (UNI, UNI2-h, H-optimus-0, H0-mini): `config.json` has
  `architecture` + `model_args` + `pretrained_cfg` (mean, std, input size); register tokens,
  `no_embed_class`, layer scale and packed / split SwiGLU MLPs are read off the state dict.

Weights: `.safetensors` is parsed here (8-byte header length, JSON header, raw little-endian
bytes; bf16 through ml_dtypes) and `.bin` goes through the restricted unpickler of
`torch_weights`. The position embedding is resampled to the input grid in numpy exactly as
torch does (bicubic, `align_corners=False`, with or without antialias), once at load time.
Every problem is a one-line `UserError` naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np

from jaxsynth.errors import UserError
from jaxsynth.eval.torch_weights import load_state_dict
from jaxsynth.models.vit import VitSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# timm names the size in the architecture; the head count is not in the state dict.
_TIMM_HEADS = {
    "tiny": 3,
    "small": 6,
    "base": 12,
    "large": 16,
    "huge": 16,
    "giant": 24,
    "gigantic": 16,
}
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """uint8 tile -> model input: resize the short side to `resize`, centre-crop `crop`, scale
    to [0, 1], normalise with mean/std (per channel)."""

    resize: int
    crop: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"


@dataclasses.dataclass
class LoadedVit:
    spec: VitSpec
    params: dict
    preprocess: Preprocess
    layout: str  # "hf" | "timm"
    weights_sha256: str
    source: str  # the weight file, for messages


# ----------------------------------------------------------------------------- file reading


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a `.safetensors` file as numpy arrays (no torch, bf16 via ml_dtypes)."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        (n,) = np.frombuffer(raw[:8], "<u8")
        header = json.loads(raw[8 : 8 + int(n)])
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a safetensors file ({e})") from None
    body = memoryview(raw)[8 + int(n) :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        if dt == "BF16":
            import ml_dtypes

            dtype = np.dtype(ml_dtypes.bfloat16)
        elif dt in _SAFETENSORS_DTYPES:
            dtype = np.dtype(_SAFETENSORS_DTYPES[dt]).newbyteorder("<")
        else:
            raise UserError(f"{path}: tensor {name} has unsupported dtype {dt}")
        start, end = info["data_offsets"]
        arr = np.frombuffer(body[start:end], dtype=dtype).reshape(info["shape"])
        out[name] = arr.astype(np.float32) if arr.dtype.kind == "f" or dt == "BF16" else arr
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_weights(folder: Path) -> tuple[dict[str, np.ndarray], Path]:
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if path.suffix == ".safetensors":
                return read_safetensors(path), path
            try:
                sd = load_state_dict(path)
            except Exception as e:  # foreign / corrupt / unsafe pickles: one line
                raise UserError(f"{path}: cannot read ({e})") from None
            return {k: np.asarray(v) for k, v in sd.items()}, path
    raise UserError(f"{folder}: no weights file ({' or '.join(WEIGHT_FILES)})")


def _read_json(path: Path, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise UserError(
                f"{path}: missing (the model's config.json must sit beside its weights)"
            )
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None


# ------------------------------------------------------------------ torch-exact pos resampling


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def torch_bicubic_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """(n_out, n_in) weights of torch's 1-D bicubic interpolation, `align_corners=False`.

    Without antialias: Keys' kernel with a = -0.75 on the 4 nearest inputs, indices clamped at
    the border. With antialias (torch's `_upsample_bicubic2d_aa`): a = -0.5 stretched by the
    scale when downsampling, weights renormalised over the in-range inputs.
    """
    scale = n_in / n_out
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        if antialias:
            support = 2.0 * scale if scale >= 1 else 2.0
            inv = 1.0 / scale if scale >= 1 else 1.0
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), n_in)
            j = np.arange(lo, hi)
            k = _cubic((j - center + 0.5) * inv, -0.5)
            w[i, lo:hi] = k / k.sum()
        else:
            src = (i + 0.5) * scale - 0.5
            f = math.floor(src)
            t = src - f
            for off, k in zip(range(-1, 3), _cubic(np.array([t + 1, t, 1 - t, 2 - t]), -0.75)):
                w[i, min(max(f + off, 0), n_in - 1)] += k
    return w


def resample_grid(pos: np.ndarray, grid_out: tuple[int, int], antialias: bool) -> np.ndarray:
    """(N, D) patch position embeddings on a square grid -> (gh*gw, D) on `grid_out`."""
    n, d = pos.shape
    side = int(round(math.sqrt(n)))
    if side * side != n:
        raise ValueError(f"position embedding of {n} patches is not a square grid")
    if (side, side) == tuple(grid_out):
        return pos
    g = pos.astype(np.float64).reshape(side, side, d)
    mh = torch_bicubic_matrix(side, grid_out[0], antialias)
    mw = torch_bicubic_matrix(side, grid_out[1], antialias)
    g = np.einsum("hi,wj,ijd->hwd", mh, mw, g)
    return g.reshape(-1, d).astype(np.float32)


# ---------------------------------------------------------------------------- layout mapping


def _dense(sd: dict, key: str) -> dict:
    return {"kernel": sd[key + ".weight"].T, "bias": sd[key + ".bias"]}


def _ln(sd: dict, key: str) -> dict:
    return {"scale": sd[key + ".weight"], "bias": sd[key + ".bias"]}


def _conv(sd: dict, key: str) -> dict:
    return {"kernel": sd[key + ".weight"].transpose(2, 3, 1, 0), "bias": sd[key + ".bias"]}


def _strip_prefix(sd: dict, anchor: str, path: Path) -> dict:
    """Drop a wrapper prefix ("vit.", "dinov2.", "model.", ...) found before `anchor`."""
    hits = [k[: -len(anchor)] for k in sd if k.endswith(anchor)]
    if len(hits) != 1:
        raise UserError(f"{path}: unknown layout (no unique '{anchor}' tensor)")
    p = hits[0]
    return {k[len(p) :]: v for k, v in sd.items() if k.startswith(p)}


def _depth(sd: dict, pattern: str) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(ids) + 1 if ids else 0


def _hf_params(sd: dict, cfg: dict, path: Path) -> tuple[VitSpec, dict, str]:
    mtype = cfg.get("model_type")
    if mtype not in ("vit", "dinov2", "dinov2_with_registers"):
        raise UserError(f"{path.parent / 'config.json'}: unknown layout model_type={mtype!r}")
    if cfg.get("hidden_act", "gelu") not in ("gelu", "silu", "swiglu"):
        raise UserError(f"{path.parent / 'config.json'}: hidden_act={cfg['hidden_act']!r}")
    sd = _strip_prefix(sd, "embeddings.cls_token", path)
    depth = _depth(sd, r"encoder\.layer\.(\d+)\.")
    dino = mtype != "vit"
    swiglu = any(".mlp.weights_in." in k for k in sd)
    ln1, ln2 = ("norm1", "norm2") if dino else ("layernorm_before", "layernorm_after")
    params = {
        "patch_embed": _conv(sd, "embeddings.patch_embeddings.projection"),
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "norm": _ln(sd, "layernorm"),
    }
    regs = sd.get("embeddings.register_tokens")
    if regs is not None:
        params["reg_token"] = regs
    for i in range(depth):
        p = f"encoder.layer.{i}."
        att = p + "attention.attention."
        q, k, v = (_dense(sd, att + n) for n in ("query", "key", "value"))
        blk = {
            "norm1": _ln(sd, p + ln1),
            "qkv": {
                "kernel": np.concatenate([q["kernel"], k["kernel"], v["kernel"]], axis=1),
                "bias": np.concatenate([q["bias"], k["bias"], v["bias"]]),
            },
            "proj": _dense(sd, p + "attention.output.dense"),
            "norm2": _ln(sd, p + ln2),
        }
        if dino:
            blk["fc1"] = _dense(sd, p + ("mlp.weights_in" if swiglu else "mlp.fc1"))
            blk["fc2"] = _dense(sd, p + ("mlp.weights_out" if swiglu else "mlp.fc2"))
            blk["ls1"] = sd[p + "layer_scale1.lambda1"]
            blk["ls2"] = sd[p + "layer_scale2.lambda1"]
        else:
            blk["fc1"] = _dense(sd, p + "intermediate.dense")
            blk["fc2"] = _dense(sd, p + "output.dense")
        params[f"block_{i}"] = blk
    dim = params["cls_token"].shape[-1]
    spec = VitSpec(
        dim=dim,
        depth=depth,
        heads=int(cfg["num_attention_heads"]),
        patch=int(cfg["patch_size"]),
        mlp_hidden=params["block_0"]["fc1"]["kernel"].shape[1] if depth else 0,
        mlp="swiglu" if swiglu else "gelu",
        num_registers=0 if regs is None else regs.shape[1],
        pos_prefix=True,
        pos_registers=False,
        layer_scale=dino,
        eps=float(cfg.get("layer_norm_eps", 1e-12 if not dino else 1e-6)),
    )
    return spec, params, mtype


def _timm_params(sd: dict, cfg: dict, path: Path) -> tuple[VitSpec, dict, str]:
    arch = str(cfg.get("architecture", ""))
    if not arch.startswith("vit_"):
        raise UserError(f"{path.parent / 'config.json'}: unknown layout architecture={arch!r}")
    sd = _strip_prefix(sd, "patch_embed.proj.weight", path)
    unsupported = [
        k for k in sd if ".q_norm." in k or ".attn.norm." in k or k.startswith("fc_norm")
    ]
    if unsupported or "norm.weight" not in sd:
        raise UserError(f"{path}: unknown layout (timm ViT variant with {unsupported[:1]})")
    depth = _depth(sd, r"blocks\.(\d+)\.")
    args = cfg.get("model_args", {})
    size = arch.split("_")[1]
    heads = args.get("num_heads", _TIMM_HEADS.get(size))
    if heads is None:
        raise UserError(f"{path.parent / 'config.json'}: set model_args.num_heads for {arch}")
    split_glu = "blocks.0.mlp.fc1_g.weight" in sd
    params = {
        "patch_embed": _conv(sd, "patch_embed.proj"),
        "cls_token": sd["cls_token"],
        "pos_embed": sd["pos_embed"],
        "norm": _ln(sd, "norm"),
    }
    if "reg_token" in sd:
        params["reg_token"] = sd["reg_token"]
    layer_scale = "blocks.0.ls1.gamma" in sd
    for i in range(depth):
        p = f"blocks.{i}."
        if split_glu:
            g, x = _dense(sd, p + "mlp.fc1_g"), _dense(sd, p + "mlp.fc1_x")
            fc1 = {k: np.concatenate([g[k], x[k]], axis=-1) for k in ("kernel", "bias")}
        else:
            fc1 = _dense(sd, p + "mlp.fc1")
        blk = {
            "norm1": _ln(sd, p + "norm1"),
            "qkv": _dense(sd, p + "attn.qkv"),
            "proj": _dense(sd, p + "attn.proj"),
            "norm2": _ln(sd, p + "norm2"),
            "fc1": fc1,
            "fc2": _dense(sd, p + "mlp.fc2"),
        }
        if layer_scale:
            blk["ls1"], blk["ls2"] = sd[p + "ls1.gamma"], sd[p + "ls2.gamma"]
        params[f"block_{i}"] = blk
    hidden = params["block_0"]["fc1"]["kernel"].shape[1]
    glu = split_glu or hidden == 2 * params["block_0"]["fc2"]["kernel"].shape[0]
    n_reg = params["reg_token"].shape[1] if "reg_token" in params else 0
    n_patch = (int(args.get("img_size", 224)) // params["patch_embed"]["kernel"].shape[0]) ** 2
    n_pos = params["pos_embed"].shape[1]
    no_embed_class = bool(args.get("no_embed_class", n_pos == n_patch))
    spec = VitSpec(
        dim=params["cls_token"].shape[-1],
        depth=depth,
        heads=int(heads),
        patch=params["patch_embed"]["kernel"].shape[0],
        mlp_hidden=hidden,
        mlp="swiglu" if glu else "gelu",
        num_registers=n_reg,
        pos_prefix=not no_embed_class,
        pos_registers=not no_embed_class,
        layer_scale=layer_scale,
        eps=1e-6,
    )
    return spec, params, "timm"


def _preprocess_hf(folder: Path, cfg: dict, mtype: str) -> Preprocess:
    """From `preprocessor_config.json` (ViTImageProcessor / BitImageProcessor fields)."""
    pre = _read_json(folder / "preprocessor_config.json", required=False)
    size = pre.get("size", cfg.get("image_size", 224))
    if isinstance(size, dict):
        size = size.get("shortest_edge", size.get("height"))
    crop = pre.get("crop_size", size) if pre.get("do_center_crop", False) else size
    if isinstance(crop, dict):
        crop = crop.get("height")
    interp = {2: "bilinear", 3: "bicubic"}.get(pre.get("resample", 2 if mtype == "vit" else 3))
    return Preprocess(
        resize=int(size),
        crop=int(crop),
        mean=tuple(pre.get("image_mean", IMAGENET_MEAN)),
        std=tuple(pre.get("image_std", IMAGENET_STD)),
        interpolation=interp or "bilinear",
    )


def _preprocess_timm(cfg: dict) -> Preprocess:
    """From `pretrained_cfg` (input_size, crop_pct, mean, std, interpolation)."""
    pc = cfg.get("pretrained_cfg", {})
    crop = int(pc.get("input_size", [3, cfg.get("model_args", {}).get("img_size", 224)])[-1])
    resize = int(math.floor(crop / float(pc.get("crop_pct", 1.0))))
    return Preprocess(
        resize=resize,
        crop=crop,
        mean=tuple(pc.get("mean", IMAGENET_MEAN)),
        std=tuple(pc.get("std", IMAGENET_STD)),
        interpolation=pc.get("interpolation", "bicubic"),
    )


def _check_shapes(spec: VitSpec, params: dict, input_size: int, path: Path) -> None:
    """Every converted tensor must have the shape the Flax module expects for this spec."""
    import jax

    from jaxsynth.models.vit import VisionTransformer

    if spec.dim % max(spec.heads, 1) or input_size % spec.patch:
        raise UserError(
            f"{path}: wrong shapes (dim {spec.dim}, {spec.heads} heads, patch {spec.patch}, "
            f"input {input_size})"
        )
    want = jax.eval_shape(
        VisionTransformer(spec).init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, input_size, input_size, 3), np.float32),
    )["params"]
    flat_want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree.leaves_with_path(want)}
    flat_got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree.leaves_with_path(params)}
    for key in sorted(set(flat_want) | set(flat_got)):
        if flat_want.get(key) != flat_got.get(key):
            raise UserError(
                f"{path}: wrong shapes at {key}: file gives {flat_got.get(key)}, "
                f"the architecture in config.json needs {flat_want.get(key)}"
            )


def _as_float32(tree):
    if isinstance(tree, dict):
        return {k: _as_float32(v) for k, v in tree.items()}
    return np.ascontiguousarray(tree, dtype=np.float32)


def load_vit(folder: str | Path, layout: str, input_size: int | None = None) -> LoadedVit:
    """Read a model folder (`config.json` + weights) of `layout` "hf" or "timm".

    `input_size` overrides the model card's crop size (the position embedding is resampled to
    it the way the reference implementation does when it meets that size).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (expected config.json + model weights)")
    if layout not in ("hf", "timm"):
        raise UserError(f"{folder}: unknown layout {layout!r} (hf or timm)")
    cfg = _read_json(folder / "config.json", required=True)
    sd, path = _read_weights(folder)
    try:
        if layout == "hf":
            spec, params, mtype = _hf_params(sd, cfg, path)
            pre = _preprocess_hf(folder, cfg, mtype)
            # transformers 4.57: ViTModel and Dinov2Model resample without antialias,
            # Dinov2WithRegistersModel with it.
            antialias = mtype == "dinov2_with_registers"
        else:
            spec, params, _ = _timm_params(sd, cfg, path)
            pre = _preprocess_timm(cfg)
            antialias = True  # timm's resample_abs_pos_embed default
    except KeyError as e:
        raise UserError(f"{path}: unknown layout (missing tensor {e})") from None
    if input_size is not None:
        pre = dataclasses.replace(pre, crop=int(input_size), resize=int(input_size))
    size = pre.crop
    n_prefix = int(spec.pos_prefix) + (spec.num_registers if spec.pos_registers else 0)
    pos = params["pos_embed"][0]
    grid = (size // spec.patch, size // spec.patch)
    try:
        patch_pos = resample_grid(pos[n_prefix:], grid, antialias)
    except ValueError as e:
        raise UserError(f"{path}: wrong shapes ({e})") from None
    params["pos_embed"] = np.concatenate([pos[:n_prefix], patch_pos])[None]
    params = _as_float32(params)
    _check_shapes(spec, params, size, path)
    return LoadedVit(spec, params, pre, layout, _file_sha256(path), str(path))
