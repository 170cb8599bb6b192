"""The launch scripts in launch/: shellcheck-clean, valid bash, and the exact commands they run.

Each script has a dry-run mode (`DRY_RUN=1`) that prints the commands it would run, one per line,
quoted with bash's `printf %q`; the tests parse those lines back with bash itself, so they check
both the arguments and that the quoting survives. The SLURM chain is run for real with a fake
`srun` (one task per SLURM_PROCID) and a fake `jaxsynth` that reports what
`jaxsynth.train.mesh.distributed_args` makes of each task's environment: the scripts and the one
place that calls `jax.distributed.initialize()` agree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
SCRIPTS = sorted(p for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))


def run(
    script: str, *args: str, env: dict | None = None, path_dirs=()
) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
    full_env.pop("CUDA_VISIBLE_DEVICES", None)
    full_env.update(env or {})
    full_env["PATH"] = os.pathsep.join([*map(str, path_dirs), full_env.get("PATH", "")])
    return subprocess.run(
        ["bash", str(LAUNCH / script), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO),
    )


def argv_of(line: str) -> list[str]:
    """The argv a dry-run line stands for, parsed by bash (the inverse of `printf %q`)."""
    out = subprocess.run(
        ["bash", "-c", 'eval "set -- $1"; printf "%s\\0" "$@"', "_", line],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split("\0")[:-1]


def test_there_are_three_launch_scripts_and_a_readme():
    names = {p.name for p in SCRIPTS}
    assert {"tpu_vm.sh", "gpu_multinode.sh", "slurm.sbatch"} <= names
    readme = (LAUNCH / "README.md").read_text()
    for name in names:
        assert name in readme, f"launch/README.md does not document {name}"


def test_shellcheck_is_clean():
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.fail(
            "shellcheck is not installed: `apt-get install -y shellcheck` (add it to the apt-get "
            "line in tests/install_and_test.sh next to chromium)"
        )
    out = subprocess.run(
        [exe, "--shell=bash", *map(str, SCRIPTS)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_parses(script):
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


# ----------------------------------------------------------------------------- gpu_multinode.sh
TRAIN = ["train", "--config", "configs/dcgan.py", "--workdir", "/nfs/runs/a b"]


def test_gpu_multinode_takes_the_environment():
    env = {
        "DRY_RUN": "1",
        "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1",
    }
    out = run("gpu_multinode.sh", *TRAIN, env=env)
    assert out.returncode == 0, out.stderr
    assert argv_of(out.stdout.strip()) == [
        "env",
        "JAX_COORDINATOR_ADDRESS=10.0.0.1:1234",
        "JAX_NUM_PROCESSES=2",
        "JAX_PROCESS_ID=1",
        "jaxsynth",
        *TRAIN,
    ]


def test_gpu_multinode_flags_override_the_environment():
    env = {"DRY_RUN": "1", "JAX_COORDINATOR_ADDRESS": "old:1", "JAX_NUM_PROCESSES": "9"}
    flags = ["--coordinator", "node0:5555", "--num-processes", "4", "--process-id", "3"]
    out = run("gpu_multinode.sh", *flags, "--local-device-ids", "0,1", "--", *TRAIN, env=env)
    assert out.returncode == 0, out.stderr
    assert argv_of(out.stdout.strip())[1:5] == [
        "JAX_COORDINATOR_ADDRESS=node0:5555",
        "JAX_NUM_PROCESSES=4",
        "JAX_PROCESS_ID=3",
        "JAX_LOCAL_DEVICE_IDS=0,1",
    ]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "no coordinator"),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
            "not below",
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "h", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
            "HOST:PORT",
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "x", "JAX_PROCESS_ID": "0"},
            "positive integer",
        ),
    ],
)
def test_gpu_multinode_rejects_a_bad_environment_in_one_line(env, message):
    out = run("gpu_multinode.sh", *TRAIN, env={"DRY_RUN": "1", **env})
    assert out.returncode == 2 and out.stdout == ""
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "per, visible, localid, expected",
    [("node", "0,1,2,3", "0", "0,1,2,3"), ("gpu", "0,1,2,3", "2", "2"), ("gpu", "3", "3", "0")],
)
def test_gpu_multinode_under_slurm_picks_the_gpus_of_each_process(per, visible, localid, expected):
    env = {
        "DRY_RUN": "1",
        "JAX_COORDINATOR_ADDRESS": "gpu01:62674",
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "6",
        "SLURM_LOCALID": localid,
        "CUDA_VISIBLE_DEVICES": visible,
        "JAXSYNTH_PER": per,
    }
    out = run("gpu_multinode.sh", "--", *TRAIN, env=env)
    assert out.returncode == 0, out.stderr
    assert argv_of(out.stdout.strip())[1:5] == [
        "JAX_COORDINATOR_ADDRESS=gpu01:62674",
        "JAX_NUM_PROCESSES=8",
        "JAX_PROCESS_ID=6",
        f"JAX_LOCAL_DEVICE_IDS={expected}",
    ]


# ----------------------------------------------------------------------------- slurm.sbatch
def fake_bin(tmp_path: Path) -> Path:
    """`scontrol show hostnames` and an `srun` that runs the command once per task, locally."""
    d = tmp_path / "bin"
    d.mkdir()
    (d / "scontrol").write_text("#!/bin/sh\nprintf 'gpu01\\ngpu02\\n'\n")
    (d / "srun").write_text(
        "#!/usr/bin/env bash\n"
        'n=1; while [ "${1#--}" != "$1" ]; do case "$1" in --ntasks=*) n="${1#--ntasks=}";; esac;'
        " shift; done\n"
        "for ((i = 0; i < n; i++)); do"
        ' SLURM_PROCID=$i SLURM_LOCALID=0 SLURM_NTASKS=$n "$@" || exit 1; done\n'
    )
    # The fake jaxsynth: what the engine's distributed start-up would do with this environment.
    (d / "fake-jaxsynth").write_text(
        f"#!/bin/sh\nexec {sys.executable} -c 'import json, sys; "
        "from jaxsynth.train.mesh import distributed_args; "
        'print("TASK " + json.dumps({"init": distributed_args(), "argv": sys.argv[1:]}))\' "$@"\n'
    )
    for f in d.iterdir():
        f.chmod(0o755)
    return d


SLURM_ENV = {"SLURM_JOB_ID": "1234", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NNODES": "2"}


def test_slurm_dry_run_prints_the_coordinator_and_srun_line(tmp_path):
    bin_dir = fake_bin(tmp_path)
    env = {**SLURM_ENV, "DRY_RUN": "1", "SLURM_SUBMIT_DIR": str(REPO)}
    out = run("slurm.sbatch", *TRAIN, env=env, path_dirs=[bin_dir])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[:3] == [
        "export JAX_COORDINATOR_ADDRESS=gpu01:62674",  # first host, 61440 + 1234 % 4096
        "export JAX_NUM_PROCESSES=2",
        "export JAXSYNTH_PER=node",
    ]
    assert argv_of(lines[3]) == [
        "srun",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        str(REPO / "launch" / "gpu_multinode.sh"),
        "--",
        *TRAIN,
    ]


def test_slurm_per_gpu_runs_one_process_per_gpu(tmp_path):
    env = {**SLURM_ENV, "DRY_RUN": "1", "JAXSYNTH_PER": "gpu", "SLURM_NTASKS_PER_NODE": "4"}
    out = run("slurm.sbatch", *TRAIN, env=env, path_dirs=[fake_bin(tmp_path)])
    assert out.returncode == 0, out.stderr
    srun = argv_of(out.stdout.strip().splitlines()[3])
    assert srun[1:4] == ["--nodes=2", "--ntasks=8", "--ntasks-per-node=4"]


def test_slurm_chain_gives_every_task_its_process_id(tmp_path):
    """slurm.sbatch -> (fake) srun -> gpu_multinode.sh -> distributed_args, per task."""
    env = {**SLURM_ENV, "SLURM_SUBMIT_DIR": str(REPO), "JAXSYNTH": "fake-jaxsynth"}
    out = run("slurm.sbatch", *TRAIN, env=env, path_dirs=[fake_bin(tmp_path)])
    assert out.returncode == 0, out.stderr
    tasks = [json.loads(x[5:]) for x in out.stdout.splitlines() if x.startswith("TASK ")]
    assert [t["init"] for t in tasks] == [
        {"coordinator_address": "gpu01:62674", "num_processes": 2, "process_id": i}
        for i in range(2)
    ]
    assert all(t["argv"] == TRAIN for t in tasks)


def test_slurm_outside_a_job_fails_in_one_line():
    out = run("slurm.sbatch", *TRAIN)
    assert out.returncode == 2 and "not inside a SLURM job" in out.stderr


# ----------------------------------------------------------------------------- tpu_vm.sh
def test_tpu_vm_creates_installs_on_every_worker_and_mounts_a_gcs_workdir():
    args = ["--name", "tpu1", "--zone", "us-central2-b", "--project", "p", "--create"]
    args += ["--accelerator-type", "v4-16", "--"]
    train = ["train", "--config", "configs/dcgan.py:paper", "--workdir", "gs://bkt/runs/dcgan"]
    out = run("tpu_vm.sh", *args, *train, "--config.seed=3", env={"DRY_RUN": "1"})
    assert out.returncode == 0, out.stderr
    cmds = [argv_of(line) for line in out.stdout.strip().splitlines()]
    where = ["--zone=us-central2-b", "--project=p"]
    tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
    assert cmds[0] == [
        *tpu, "create", "tpu1", *where, "--accelerator-type=v4-16", "--version=tpu-ubuntu2204-base"
    ]  # fmt: skip
    assert cmds[1][:3] == ["git", "-C", str(REPO)] and "archive" in cmds[1]
    assert cmds[2][:5] == [*tpu, "scp"] and cmds[2][-1] == "--worker=all"
    install, train_cmd = cmds[3], cmds[4]
    for c in (install, train_cmd):
        assert c[:6] == [*tpu, "ssh", "tpu1"] and "--worker=all" in c
    setup = install[-1]
    assert "pip install" in setup and "jax[tpu]" in setup and "gcsfuse" in setup
    remote = train_cmd[-1]
    assert remote.startswith("--command=cd ~/jaxsynth")
    assert "gcsfuse --implicit-dirs bkt /mnt/jaxsynth-gcs/bkt" in remote
    tail = remote.split("JAXSYNTH_DISTRIBUTED=1 ", 1)[1]
    assert tail.startswith("~/jaxsynth-venv/bin/jaxsynth ")  # ~ expands on the worker
    assert argv_of(tail)[1:] == [
        "train",
        "--config",
        "configs/dcgan.py:paper",
        "--workdir",
        "/mnt/jaxsynth-gcs/bkt/runs/dcgan",
        "--config.seed=3",
    ]


def test_tpu_vm_local_workdir_existing_vm_no_install():
    args = ["--name", "t", "--zone", "z", "--no-install", "--", "train", "--workdir=/tmp/run"]
    out = run("tpu_vm.sh", *args, env={"DRY_RUN": "1"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "gcsfuse" not in lines[0]
    assert argv_of(lines[0])[-1].endswith("jaxsynth train --workdir=/tmp/run")


def test_tpu_vm_requires_name_zone_and_arguments():
    assert "--name is required" in run("tpu_vm.sh", "--zone", "z", "--", "train").stderr
    out = run("tpu_vm.sh", "--name", "t", "--zone", "z")
    assert out.returncode == 2 and "jaxsynth arguments" in out.stderr


# ----------------------------------------------------------------------------- mesh.py
def test_distributed_args_from_the_environment():
    from jaxsynth.errors import UserError
    from jaxsynth.train.mesh import distributed_args

    assert distributed_args({}) is None  # one process: jax.distributed is not started
    assert distributed_args(
        {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    ) == {"coordinator_address": "h:1", "num_processes": 4, "process_id": 3}
    # Only the coordinator (slurm.sbatch): jax fills the rest from SLURM_* itself.
    assert distributed_args({"JAX_COORDINATOR_ADDRESS": "h:1"}) == {"coordinator_address": "h:1"}
    # Cloud TPU (tpu_vm.sh): everything auto-detected.
    assert distributed_args({"JAXSYNTH_DISTRIBUTED": "1"}) == {"coordinator_address": None}
    with pytest.raises(UserError, match="JAX_PROCESS_ID='one' is not an integer"):
        distributed_args({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "one"})
