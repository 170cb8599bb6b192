"""The device mesh and shardings every run uses, and multi-host start-up, in one place.

Data parallelism only: one mesh axis, "data", over every device of every host. The batch is split
along it (`batch_sharding`), the train state is replicated (`replicated`). XLA's SPMD partitioner
then inserts the gradient all-reduce itself, so a step written for one device is exact on N.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxsynth.errors import UserError

DATA_AXIS = "data"
_distributed_done = False


def distributed_args(environ: dict | None = None) -> dict | None:
    """The `jax.distributed.initialize` arguments the environment asks for, or None (one process).

    jax itself reads only `JAX_COORDINATOR_ADDRESS` (and `JAX_LOCAL_DEVICE_IDS`); the process
    count and id come from `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` here, which is what
    `launch/gpu_multinode.sh` exports. Any of them left unset is auto-detected by jax from the
    cluster (SLURM: `SLURM_NTASKS`/`SLURM_PROCID`/`SLURM_LOCALID`; Cloud TPU VM metadata; Open
    MPI), which is how `launch/slurm.sbatch` (coordinator only) and `launch/tpu_vm.sh`
    (`JAXSYNTH_DISTRIBUTED=1`, nothing else) start.
    """
    env = os.environ if environ is None else environ
    address = env.get("JAX_COORDINATOR_ADDRESS") or None
    if not address and env.get("JAXSYNTH_DISTRIBUTED") != "1":
        return None
    args: dict = {"coordinator_address": address}
    for key, name in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
        value = env.get(name)
        if value not in (None, ""):
            try:
                args[key] = int(value)
            except ValueError:
                raise UserError(f"{name}={value!r} is not an integer") from None
    return args


def maybe_initialize_distributed() -> bool:
    """Call `jax.distributed.initialize()` once when the environment describes a multi-host job.

    Triggers: `JAX_COORDINATOR_ADDRESS` (with `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, or those
    auto-detected) or `JAXSYNTH_DISTRIBUTED=1` (let jax auto-detect SLURM / Cloud TPU / MPI);
    see `distributed_args`. Must run before anything touches a device; `jaxsynth train` calls it
    first. Returns whether it initialised.
    """
    global _distributed_done
    if _distributed_done:
        return True
    args = distributed_args()
    if args is None:
        return False
    jax.distributed.initialize(**args)
    _distributed_done = True
    return True


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over all (global) devices with the axis "data"."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole value (train state, RNG, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, leading_unsharded: int = 0) -> NamedSharding:
    """Batch axis on "data"; `leading_unsharded` extra leading axes (e.g. K steps) stay whole."""
    return NamedSharding(mesh, PartitionSpec(*([None] * leading_unsharded), DATA_AXIS))


def global_batch(local: dict[str, np.ndarray], mesh: Mesh, leading_unsharded: int = 0) -> dict:
    """This process's local batch -> global `jax.Array`s sharded on "data" (multi-host safe)."""
    sharding = batch_sharding(mesh, leading_unsharded)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
    }
