"""What `jaxsynth sd sample --unet DIR / --lora DIR` loads: a fully fine-tuned U-Net, or LoRA
adapters merged into the base U-Net; the file names fine-tuning exports. A module below both the
pipeline and the fine-tuning code, so neither imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxsynth.errors import UserError
from jaxsynth.models import lora as lora_lib

LORA_FILE, LORA_META = "lora.msgpack", "lora.json"
UNET_FILE = "unet/diffusion_flax_model.msgpack"


def unet_override(base_unet: Any, unet_dir: str | None = None, lora_dir: str | None = None):
    """The U-Net params to sample with: `base_unet`, replaced by `--unet DIR`'s, plus the merged
    adapters of `--lora DIR`. Shapes are checked against the base U-Net."""
    from flax.serialization import msgpack_restore
    from flax.traverse_util import flatten_dict

    params = base_unet
    if unet_dir:
        f = Path(unet_dir) / UNET_FILE
        if not f.is_file():
            raise UserError(f"--unet {unet_dir}: no {UNET_FILE} (export of a full fine-tuning run)")
        new = msgpack_restore(f.read_bytes())
        want = {k: v.shape for k, v in flatten_dict(base_unet).items()}
        got = {k: v.shape for k, v in flatten_dict(new).items()}
        if want != got:
            raise UserError(f"{f}: parameter tree does not match the model's U-Net")
        params = new
    if lora_dir:
        f, meta_f = Path(lora_dir) / LORA_FILE, Path(lora_dir) / LORA_META
        if not f.is_file() or not meta_f.is_file():
            raise UserError(f"--lora {lora_dir}: needs {LORA_FILE} and {LORA_META}")
        meta = json.loads(meta_f.read_text())
        adapters = msgpack_restore(f.read_bytes())
        targets = lora_lib.lora_targets(params, meta["targets"])
        for path, ad in adapters.items():
            if path not in targets or (ad["down"].shape[0], ad["up"].shape[1]) != targets[path]:
                raise UserError(f"{f}: adapter {path} does not fit the model's U-Net")
        params = lora_lib.merge_lora(params, adapters, float(meta["alpha"]) / float(meta["rank"]))
        params = jax.tree.map(np.asarray, params)
    return params
