"""Load a local Stable Diffusion folder's PyTorch weights into the Flax modules, without torch.

Why: the weights people hold are PyTorch files (`diffusion_pytorch_model.safetensors`,
`model.safetensors`, or the older `.bin` pickles); Flax `.msgpack` files exist for a few
repositories only. diffusers' `from_pt=True` needs torch, reads only `.bin` for the U-Net and VAE,
and builds a randomly initialised model first (minutes for SD on a CPU). Here:

* `.safetensors` is parsed directly (an 8-byte header length, a JSON header, raw little-endian
  bytes; bfloat16 through `ml_dtypes`, which jax ships) and `.bin` through the restricted
  unpickler of `jaxsynth.eval.torch_weights` (no code can run from the file);
* the target tree comes from `jax.eval_shape(init)` (shapes only, seconds), and every PyTorch key
  is mapped onto it by the rules below; a missing, unexpected or mis-shaped tensor is a one-line
  `UserError` naming the file and the key.

Mapping rules (the ones diffusers' and transformers' converters apply, written out):
  module path: diffusers modules join a list index to its name (`down_blocks.0` -> `down_blocks_0`);
    transformers' Flax CLIP keeps it as its own level (`layers.0` -> `layers`, `0`);
  `weight` -> `scale` (norms), `embedding` (embeddings) or `kernel`: linear (out, in) -> (in, out),
    conv (out, in, kh, kw) -> (kh, kw, in, out), a 1x1 conv stored for a linear layer is squeezed;
  VAE attention written with the new names (`to_q`, `to_k`, `to_v`, `to_out.0`) goes to the Flax
  names `query`, `key`, `value`, `proj_attn`; old `gamma`/`beta` -> `scale`/`bias`;
  buffers (`position_ids`, `num_batches_tracked`) are dropped.
`tests/fixtures/sd_pt/make_fixture.py` checks the result equals diffusers' `from_pt=True`
conversion leaf for leaf (same paths, shapes, dtypes and bytes).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from jaxsynth.errors import UserError

# Weight files per component, in the order they are tried (Flax first: no mapping needed).
FLAX_FILES = {
    "unet": "diffusion_flax_model.msgpack",
    "vae": "diffusion_flax_model.msgpack",
    "text_encoder": "flax_model.msgpack",
}
TORCH_FILES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
}
_STYLE = {"unet": "diffusers", "vae": "diffusers", "text_encoder": "transformers"}
_ATTN_ALIASES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out_0": "proj_attn"}
_IGNORED = re.compile(r"(^|\.)(position_ids|num_batches_tracked)$")
_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a `.safetensors` file as numpy arrays (bfloat16 as `ml_dtypes.bfloat16`)."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
    except (struct.error, ValueError, UnicodeDecodeError):
        raise UserError(f"{path}: not a safetensors file (bad header)") from None
    body = memoryview(raw)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        code = info.get("dtype")
        if code == "BF16":
            import ml_dtypes

            dtype = np.dtype(ml_dtypes.bfloat16)
        elif code in _SAFETENSORS_DTYPES:
            dtype = np.dtype(_SAFETENSORS_DTYPES[code]).newbyteorder("<")
        else:
            raise UserError(f"{path}: tensor {name} has unsupported dtype {code}")
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - start != dtype.itemsize * int(np.prod(shape)) or end > len(body):
            raise UserError(f"{path}: tensor {name} has a wrong byte range (file truncated?)")
        out[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape)
    return out


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A PyTorch state dict from `.safetensors` or `.bin` as numpy arrays, never importing torch."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    import pickle
    import zipfile

    from jaxsynth.eval.torch_weights import load_state_dict

    try:
        return dict(load_state_dict(path))
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as e:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({e})") from None


def check_weights_header(path: str | Path) -> None:
    """Cheap format check (header only): a safetensors header or a torch zip/legacy pickle."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if path.suffix == ".safetensors":
            try:
                (n,) = struct.unpack("<Q", head)
                json.loads(f.read(n))
                return
            except (struct.error, ValueError, UnicodeDecodeError, MemoryError, OverflowError):
                raise UserError(f"{path}: not a safetensors file (bad header)") from None
    if head[:4] == b"PK\x03\x04" or head[:2] == b"\x80\x02":  # torch zip / legacy pickle
        return
    raise UserError(f"{path}: not a PyTorch checkpoint (neither a zip nor a pickle)")


def _module_parts(pt_key: str, style: str) -> tuple[str, ...]:
    if style == "diffusers":  # `name.<index>` -> `name_<index>` (diffusers' Flax module names)
        pt_key = re.sub(r"(?<=\w)\.(\d+)(?=\.|$)", r"_\1", pt_key)
    return tuple(pt_key.split("."))


def _target_key(pt_key, tensor, targets: dict) -> tuple[tuple[str, ...], np.ndarray] | None:
    """(flax path, array in Flax layout) for one PyTorch tensor, or None if nothing matches."""
    *module, leaf = pt_key
    module = tuple(module)
    if module and module[-1] in _ATTN_ALIASES and module + ("kernel",) not in targets:
        aliased = module[:-1] + (_ATTN_ALIASES[module[-1]],)
        if aliased + ("kernel",) in targets:
            module = aliased
    if leaf in ("weight", "gamma"):
        if module + ("scale",) in targets:
            return module + ("scale",), tensor
        if leaf == "weight" and module + ("embedding",) in targets:
            return module + ("embedding",), tensor
        if leaf == "weight" and module + ("kernel",) in targets:
            want = targets[module + ("kernel",)]
            if tensor.ndim == 4 and len(want) == 2 and tensor.shape[2:] == (1, 1):
                tensor = tensor[:, :, 0, 0]  # a 1x1 conv saved for a linear layer
            if tensor.ndim == 4:
                return module + ("kernel",), np.transpose(tensor, (2, 3, 1, 0))
            if tensor.ndim == 2:
                return module + ("kernel",), tensor.T
        return None
    if leaf in ("bias", "beta") and module + ("bias",) in targets:
        return module + ("bias",), tensor
    return None


def pt_to_flax(state_dict: dict[str, np.ndarray], target_shapes: Any, style: str, source: str):
    """Map a PyTorch state dict onto the Flax parameter tree `target_shapes` (a pytree of
    objects with `.shape`, e.g. from `jax.eval_shape`). Returns a nested dict of numpy arrays
    (contiguous, the file's dtype). `source` names the file in errors."""
    from flax.traverse_util import flatten_dict, unflatten_dict

    targets = {k: tuple(v.shape) for k, v in flatten_dict(target_shapes).items()}
    out: dict[tuple[str, ...], np.ndarray] = {}
    unexpected = []
    for name, tensor in state_dict.items():
        if _IGNORED.search(name):
            continue
        mapped = _target_key(_module_parts(name, style), np.asarray(tensor), targets)
        if mapped is None:
            unexpected.append(name)
            continue
        key, value = mapped
        if value.shape != targets[key]:
            raise UserError(
                f"{source}: {name} has shape {tuple(tensor.shape)}; the model config wants "
                f"{'/'.join(key)} of shape {targets[key]} (wrong config.json for these weights?)"
            )
        if key in out:
            raise UserError(f"{source}: two tensors map onto {'/'.join(key)} (second: {name})")
        out[key] = np.ascontiguousarray(value)
    if unexpected:
        raise UserError(
            f"{source}: {len(unexpected)} tensor(s) match no parameter of the model, e.g. "
            f"{', '.join(unexpected[:3])} (wrong component or config.json?)"
        )
    missing = [k for k in targets if k not in out]
    if missing:
        raise UserError(
            f"{source}: {len(missing)} parameter(s) missing, e.g. "
            f"{', '.join('/'.join(k) for k in missing[:3])}"
        )
    return unflatten_dict(out)


def weight_file(root: str | Path, component: str) -> Path | None:
    """The component's weight file (Flax first, then safetensors, then .bin), or None."""
    folder = Path(root) / component
    for name in (FLAX_FILES[component], *TORCH_FILES[component]):
        if (folder / name).is_file():
            return folder / name
    return None


def build_modules(root: str | Path, dtype=None) -> dict[str, Any]:
    """The Flax U-Net, VAE, CLIP text model and tokenizer of an SD folder, from its configs only
    (no weights read): {"unet", "vae", "text_encoder", "tokenizer"}; `dtype` is the compute
    dtype."""
    import jax.numpy as jnp
    from diffusers import FlaxAutoencoderKL, FlaxUNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer, FlaxCLIPTextModel

    from jaxsynth.sd.hf import quiet_hf_logging

    quiet_hf_logging()
    root = Path(root)
    dtype = jnp.float32 if dtype is None else dtype
    out: dict[str, Any] = {}
    try:
        for name, cls in (("unet", FlaxUNet2DConditionModel), ("vae", FlaxAutoencoderKL)):
            model = cls.from_config(cls.load_config(str(root / name)), dtype=dtype)
            out[name] = model[0] if isinstance(model, tuple) else model
        text_config = CLIPTextConfig.from_pretrained(str(root / "text_encoder"))
        out["text_encoder"] = FlaxCLIPTextModel(text_config, _do_init=False, dtype=dtype)
        out["tokenizer"] = CLIPTokenizer.from_pretrained(str(root / "tokenizer"))
    except (OSError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{root}: cannot build the SD modules from their configs ({first})"
        ) from None
    return out


def param_shapes(modules: dict[str, Any]) -> dict[str, Any]:
    """The parameter tree shapes of each module (tracing only, no arrays allocated)."""
    import jax

    key = jax.random.PRNGKey(0)
    text = modules["text_encoder"]
    length = int(text.config.max_position_embeddings)
    return {
        "unet": jax.eval_shape(modules["unet"].init_weights, key),
        "vae": jax.eval_shape(modules["vae"].init_weights, key),
        "text_encoder": jax.eval_shape(lambda k: text.init_weights(k, (1, length)), key),
    }


def load_component(root: str | Path, component: str, target_shapes: Any) -> dict:
    """One component's params (nested dict of numpy arrays) from Flax or PyTorch files."""
    path = weight_file(root, component)
    if path is None:
        names = " or ".join((FLAX_FILES[component], *TORCH_FILES[component]))
        raise UserError(f"{root}: {component}/ has no weights ({names})")
    if path.suffix == ".msgpack":
        from flax.serialization import msgpack_restore

        return msgpack_restore(path.read_bytes())
    return pt_to_flax(read_state_dict(path), target_shapes, _STYLE[component], str(path))


def load_sd_params(root: str | Path, modules: dict[str, Any] | None = None):
    """(modules, {"unet", "vae", "text_encoder"} params as numpy trees) of a local SD folder."""
    modules = build_modules(root) if modules is None else modules
    shapes = param_shapes(modules)
    params = {c: load_component(root, c, shapes[c]) for c in ("unet", "vae", "text_encoder")}
    return modules, params
