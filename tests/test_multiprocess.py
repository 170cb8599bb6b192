"""A real multi-process run: 2 processes x 2 CPU devices on localhost through `jaxsynth train`.

What it proves, end to end through the CLI and the one engine:

* `jax.distributed` starts from the environment the launch scripts set (`JAX_COORDINATOR_ADDRESS`,
  `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` -> `maybe_initialize_distributed`), with CPU collectives
  (gloo, jax 0.10's default) doing the cross-process gradient all-reduce;
* the final parameters equal those of a 1-process 4-device run of the same config (the global
  batches do not depend on how many processes read them);
* the run checkpoints once into the shared workdir (Orbax: the primary host writes the replicated
  state, each process its own data-iterator file) and BOTH processes restore from it on resume
  (each process's own state replica is compared after the resumed run);
* the records each process read are disjoint, and together they are exactly the global batches.

Children are killed on any failure; every wait has a timeout; ports are picked free.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fast_jax import CACHE, FAST_COMPILE

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 240
GLOBAL_BATCH = 8
QUIET = [
    "--config.batch_size=8",
    "--config.checkpoint_every=2",
    "--config.train.sample_every=0",
    "--config.train.ssim_every=0",
    "--config.train.log_every=1",
    # multi-process runs read through Grain; the 1-process reference must read the same stream
    # (auto would put its small data on device, a different, equally exact, batch order)
    "--config.train.device_data=off",
]

# The child: `jaxsynth train` (cli.main), plus two recorders that change nothing in the run:
# the image rows this process read for each step, and this process's own replica of the state.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    out = sys.argv[1]
    import hashlib
    import jaxsynth.train.loop as loop
    reads = {}  # first step of a dispatch -> fingerprints of the image rows this process read
    original_device_batch = loop._device_batch
    def recording_device_batch(first, local, mesh):
        reads[first] = [hashlib.sha1(np.ascontiguousarray(r).tobytes()).hexdigest()[:16]
                        for b in local for r in np.asarray(b["image"])]
        return original_device_batch(first, local, mesh)
    loop._device_batch = recording_device_batch
    original_train = loop.train
    def recording_train(*args, **kwargs):
        import jax
        result = original_train(*args, **kwargs)
        leaves = [np.asarray(x.addressable_shards[0].data) for x in jax.tree.leaves(result.state)]
        tag = f"{out}.p{jax.process_index()}"
        np.savez(tag + ".npz", *leaves)
        with open(tag + ".json", "w") as f:
            json.dump({"reads": [reads[k] for k in sorted(reads)],
                       "process_index": jax.process_index(),
                       "process_count": jax.process_count(), "devices": jax.device_count(),
                       "local_devices": jax.local_device_count(),
                       "resumed_from": result.resumed_from, "step": result.step}, f)
        return result
    loop.train = recording_train
    from jaxsynth.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(local_devices: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
    env.pop("JAXSYNTH_DISTRIBUTED", None)
    env["XLA_FLAGS"] = f"{FAST_COMPILE} --xla_force_host_platform_device_count={local_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = CACHE
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env.update(extra)
    return env


def start(tmp: Path, out: Path, workdir: Path, steps: int, env: dict) -> subprocess.Popen:
    script = tmp / "child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), str(out), "train", "--config", "configs/dcgan.py:smoke"]
    cmd += ["--workdir", str(workdir), f"--config.num_steps={steps}", *QUIET]
    log = open(str(out) + f".{env.get('JAX_PROCESS_ID', 'single')}.log", "w")  # noqa: SIM115
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))


def wait_all(procs: list[subprocess.Popen], logs: list[Path]) -> None:
    """Wait for every child; on a failure or timeout kill the rest and show their logs."""
    try:
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    if any(p.returncode != 0 for p in procs):
        text = "\n".join(f"--- {log}\n{log.read_text()[-2500:]}" for log in logs if log.exists())
        pytest.fail(f"child exit codes {[p.returncode for p in procs]}\n{text}")


def two_process_envs(port: int) -> list[dict]:
    return [
        child_env(
            2,
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
        )
        for pid in range(2)
    ]


def run_together(tmp: Path, jobs: list[tuple[str, Path, int, dict]]) -> None:
    """Start every (tag, workdir, steps, env) child at once; wait for all (kill all on failure)."""
    procs, logs = [], []
    try:
        for tag, workdir, steps, env in jobs:
            procs.append(start(tmp, tmp / tag, workdir, steps, env))
            logs.append(Path(f"{tmp / tag}.{env.get('JAX_PROCESS_ID', 'single')}.log"))
    finally:
        wait_all(procs, logs)


def results(tmp: Path, tag: str, n: int) -> list[dict]:
    return [json.loads(Path(f"{tmp / tag}.p{pid}.json").read_text()) for pid in range(n)]


def leaves(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def test_two_processes_match_one_process_and_resume_from_one_checkpoint(tmp_path):
    shared = tmp_path / "two"  # the workdir both processes share (as on NFS / a GCS mount)
    # Phase 1: two processes train 2 steps; the 1-process 4-device reference (4 steps) runs
    # alongside (independent workdir and coordinator-free).
    envs = two_process_envs(free_port())
    run_together(
        tmp_path,
        [("mp_a", shared, 2, envs[0]), ("mp_a", shared, 2, envs[1]),
         ("ref", tmp_path / "one", 4, child_env(4))],
    )  # fmt: skip
    first, (reference,) = results(tmp_path, "mp_a", 2), results(tmp_path, "ref", 1)
    assert [r["process_count"] for r in first] == [2, 2]
    assert [r["devices"] for r in first] == [4, 4] and [r["local_devices"] for r in first] == [2, 2]
    assert [r["resumed_from"] for r in first] == [None, None]

    # One checkpoint directory, written once; each process saved its own iterator position.
    steps_on_disk = sorted(
        int(p.name) for p in (shared / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert steps_on_disk == [0, 2]
    iter_files = sorted(p.name for p in (shared / "checkpoints" / "2" / "data_iter").iterdir())
    assert len([n for n in iter_files if "process" in n]) == 2, iter_files

    # Phase 2: both processes resume from the shared checkpoint and train to step 4.
    envs = two_process_envs(free_port())
    run_together(tmp_path, [("mp_b", shared, 4, envs[0]), ("mp_b", shared, 4, envs[1])])
    second = results(tmp_path, "mp_b", 2)
    assert [r["resumed_from"] for r in second] == [2, 2]  # both restored from process 0's save
    assert [r["step"] for r in second] == [4, 4]

    assert reference["devices"] == 4 and reference["process_count"] == 1

    # Both processes' replicas of the final state equal the 1-process 4-device run.
    ref = leaves(tmp_path / "ref.p0.npz")
    for pid in range(2):
        got = leaves(tmp_path / f"mp_b.p{pid}.npz")
        assert len(got) == len(ref)
        for x, y in zip(got, ref, strict=True):
            assert x.shape == y.shape and x.dtype == y.dtype
            np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5)

    # Disjoint reads: at every step the two processes read different images, each half of the
    # global batch, and together exactly the global batch the 1-process run read at that step.
    reads = [first[p]["reads"] + second[p]["reads"] for p in range(2)]
    assert len(reference["reads"]) == 4 and len(reads[0]) == len(reads[1]) == 4
    for step, global_rows in enumerate(reference["reads"]):
        rows0, rows1 = reads[0][step], reads[1][step]
        assert len(rows0) == len(rows1) == GLOBAL_BATCH // 2
        assert not set(rows0) & set(rows1), f"step {step}: both processes read the same image"
        assert rows0 + rows1 == global_rows
