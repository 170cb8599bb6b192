"""One run per workdir: an exclusive lock held for the whole of `train`, `run`, `sweep`, `sample`.

WHY: two runs on one workdir interleave their checkpoints, stage directories and metrics logs
(two `train`s both exit 0 and `metrics.jsonl` logs every step twice). The lock is an `fcntl`
file lock on `<workdir>/.jaxsynth.lock`, which the kernel releases when the holder dies (even by
SIGKILL), so a lock can never outlive its process on a local disk. The file also holds the
holder's PID, host, command and start time, so a refused second run names the holder in one
line, and a run that finds a dead holder's record (the lock free, the record still there) takes
over with a note.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from jaxsynth.errors import UserError

LOCK_NAME = ".jaxsynth.lock"


class WorkdirBusy(UserError):
    """Another live process holds the workdir."""


def _describe(holder: dict) -> str:
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if since else "?"
    return (
        f"'{holder.get('command', '?')}' (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {when})"
    )


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    if not raw.strip():
        return {}
    try:
        holder = json.loads(raw)
        return holder if isinstance(holder, dict) else {"record": "unreadable"}
    except ValueError:
        return {"record": "unreadable"}


class WorkdirLock:
    """`with WorkdirLock(workdir, "train"):` — exclusive for the block, released on exit."""

    def __init__(self, workdir: str | Path, command: str, stream=None, create: bool = True):
        self.workdir = Path(workdir)
        self.create = create  # False: the workdir must exist (`sample` reads a finished run)
        self.path = self.workdir / LOCK_NAME
        self.command = command
        self.stream = stream if stream is not None else sys.stderr
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        if not self.create and not self.workdir.is_dir():
            raise UserError(f"--workdir {self.workdir}: no such folder (train there first)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise WorkdirBusy(
                f"{self.workdir} is in use by {_describe(holder)}; wait for it to finish or "
                f"use another --workdir"
            ) from None
        except OSError as e:  # a filesystem without flock: say so rather than run unguarded
            os.close(fd)
            raise UserError(f"{self.path}: cannot lock the workdir ({e.strerror})") from None
        previous = _read_holder(fd)
        if previous:
            print(
                f"note: {self.workdir} was left locked by {_describe(previous)}, which is no "
                f"longer running; taking it over",
                file=self.stream,
                flush=True,
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "since": time.time(),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty record: released cleanly
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


# What a training run writes into its workdir; `--restart` moves these aside (nothing deleted).
RUN_FILES = ("checkpoints", "damaged_checkpoints", "metrics.jsonl", "tb", "samples", "config.json")


def set_aside_run(workdir: str | Path) -> Path | None:
    """Move a previous run's files to `<workdir>/restarted-<UTC time>/`; None if there were none.

    The study split cache (`split/`) stays: it depends on the data settings only, and is
    verified by its per-image hashes whenever it is read.
    """
    workdir = Path(workdir)
    present = [workdir / n for n in RUN_FILES if (workdir / n).exists()]
    if not present:
        return None
    dest = workdir / f"restarted-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    dest.mkdir()
    for p in present:
        os.replace(p, dest / p.name)
    return dest
