"""Engine settings (`config.train.*`) with their defaults, shared by every model's config.

A config may omit `train` entirely or set only some keys; `engine_settings(config)` fills the rest.
"""

from __future__ import annotations

import ml_collections


def engine_config() -> ml_collections.ConfigDict:
    """Defaults for `config.train`; configs call this and change what they need."""
    t = ml_collections.ConfigDict()
    t.log_every = 50  # steps between console/TensorBoard scalars
    t.steps_per_dispatch = 0  # K optimiser steps per jit call (lax.scan); 0 = auto (dispatch.py)
    t.keep_checkpoints = 3  # keep-N in the Orbax manager
    t.sample_every = 500  # steps between sample-grid PNGs (0 = never); needs task.sample
    t.sample_grid = 16  # images in a sample grid
    t.ssim_every = 500  # steps between SSIM-to-real evaluations (0 = never)
    t.ssim_samples = 64  # generated images per SSIM evaluation
    t.fid_every = 0  # steps between FID-vs-held-out evaluations (0 = never; see eval/monitor.py)
    t.fid_samples = 256  # generated images per FID evaluation
    t.eval_every = 0  # steps between validation evaluations (0 = never); needs task.eval_step
    t.keep_best = "loss"  # keep the weights with the lowest val_<this> in <workdir>/best ("": no)
    t.inception_weights = ""  # pytorch-fid's .pth (local); empty = domain features
    t.data_workers = 0  # Grain worker processes
    t.compute_dtype = "float32"  # or "bfloat16": bf16 compute, float32 params (GPU/TPU)
    t.prefetch = 2  # dispatches read + put on device ahead, in a thread (0 = inline)
    t.device_data = "auto"  # "on": training arrays on device, batches drawn in the step; "off"
    t.device_data_max_bytes = 512 * 2**20  # "auto" puts the arrays on device up to this size
    return t


def engine_settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config.train` with every missing key filled from `engine_config()`."""
    out = engine_config()
    if "train" in config:
        for k, v in config.train.items():
            out[k] = v
    return out
