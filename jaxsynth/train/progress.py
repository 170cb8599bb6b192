"""Console progress for long runs: step, losses, steps/s (recent window) and ETA, one line."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Tracks throughput since the previous report (so compile time only skews the first)."""

    def __init__(self, total_steps: int, start_step: int, batch_size: int, stream=None):
        self.total = int(total_steps)
        self.batch_size = int(batch_size)
        self._stream = stream
        self._last_step = int(start_step)
        self._last_time = time.perf_counter()
        self.steps_per_sec = 0.0

    def report(self, step: int, scalars: Mapping[str, float]) -> str:
        now = time.perf_counter()
        done = step - self._last_step
        if done > 0 and now > self._last_time:
            self.steps_per_sec = done / (now - self._last_time)
        self._last_step, self._last_time = step, now
        eta = (self.total - step) / self.steps_per_sec if self.steps_per_sec > 0 else float("nan")
        losses = " ".join(f"{k} {v:.4f}" for k, v in sorted(scalars.items()) if "loss" in k)
        eta_text = format_duration(eta) if eta == eta else "?"
        line = (
            f"step {step}/{self.total} | {losses} | {self.steps_per_sec:.2f} steps/s "
            f"({self.steps_per_sec * self.batch_size:.1f} img/s) | ETA {eta_text}"
        )
        print(line, file=self._stream or sys.stdout, flush=True)
        return line
