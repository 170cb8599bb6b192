"""Metric aggregation (clu.metrics) and writers (clu's MetricWriter interface, no TensorFlow).

`clu.metric_writers` imports TensorFlow on package import, which this project does not install.
Its `interface` module alone needs only jax/numpy, so it is loaded from its file without running
the package `__init__`; `TensorBoardWriter` implements that interface over tensorboardX event
files (readable by TensorBoard) and `ConsoleWriter` prints one line per write.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from clu import metrics as clu_metrics


def _load_clu_interface():
    name = "clu.metric_writers.interface"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("clu")
    path = Path(next(iter(spec.submodule_search_locations))) / "metric_writers" / "interface.py"
    mod_spec = importlib.util.spec_from_file_location("jaxsynth_clu_writer_interface", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


clu_interface = _load_clu_interface()
MetricWriter = clu_interface.MetricWriter


def averaging_collection(names: Sequence[str]) -> type:
    """A `clu.metrics.Collection` with an `Average` for each metric name."""
    return clu_metrics.Collection.create(
        **{n: clu_metrics.Average.from_output(n) for n in sorted(names)}
    )


class MetricAverager:
    """Averages per-step scalar dicts between log points with clu's `Average` metrics."""

    def __init__(self) -> None:
        self._cls: type | None = None
        self._acc: Any = None

    def update(self, step_metrics: Mapping[str, Any]) -> None:
        """`step_metrics`: name -> scalar, or name -> (K,) array for K steps in one dispatch."""
        values = {k: np.asarray(v, np.float32).reshape(-1) for k, v in step_metrics.items()}
        if self._cls is None:
            self._cls = averaging_collection(list(values))
        update = self._cls.single_from_model_output(**values)
        self._acc = update if self._acc is None else self._acc.merge(update)

    def compute_and_reset(self) -> dict[str, float]:
        if self._acc is None:
            return {}
        out = {k: float(v) for k, v in self._acc.compute().items()}
        self._acc = None
        return out


class TensorBoardWriter(MetricWriter):
    """clu MetricWriter over tensorboardX's SummaryWriter (event files in `logdir`)."""

    def __init__(self, logdir: str | Path):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(str(logdir), flush_secs=30)

    def write_summaries(self, step, values, metadata=None):
        for k, v in values.items():
            self._writer.add_scalar(k, float(np.asarray(v)), int(step))

    def write_scalars(self, step, scalars):
        for k, v in scalars.items():
            self._writer.add_scalar(k, float(np.asarray(v)), int(step))

    def write_images(self, step, images):
        for k, v in images.items():
            arr = np.asarray(v)
            if arr.ndim == 3:
                arr = arr[None]
            self._writer.add_images(k, arr, int(step), dataformats="NHWC")

    def write_videos(self, step, videos):
        pass  # not used by the engine

    def write_audios(self, step, audios, *, sample_rate):
        pass  # not used by the engine

    def write_texts(self, step, texts):
        for k, v in texts.items():
            self._writer.add_text(k, str(v), int(step))

    def write_histograms(self, step, arrays, num_buckets=None):
        for k, v in arrays.items():
            self._writer.add_histogram(k, np.asarray(v), int(step))

    def write_hparams(self, hparams):
        self._writer.add_text("hparams", "\n".join(f"{k}: {v}" for k, v in sorted(hparams.items())))

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


class ConsoleWriter(MetricWriter):
    """Prints scalars as one line `[step N] a=1.23 b=4.56` (the progress line is separate)."""

    def __init__(self, stream=None):
        self._stream = stream

    def _print(self, text: str) -> None:
        print(text, file=self._stream or sys.stdout, flush=True)

    def write_summaries(self, step, values, metadata=None):
        self.write_scalars(step, values)

    def write_scalars(self, step, scalars):
        body = " ".join(f"{k}={float(np.asarray(v)):.4g}" for k, v in sorted(scalars.items()))
        self._print(f"[step {int(step)}] {body}")

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        for k, v in texts.items():
            self._print(f"[step {int(step)}] {k}: {v}")

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_hparams(self, hparams):
        pass

    def flush(self):
        pass

    def close(self):
        pass


class MultiWriter(MetricWriter):
    """Fans every call out to several writers."""

    def __init__(self, writers: Sequence[MetricWriter]):
        self._writers = list(writers)

    def _each(self, name, *args, **kwargs):
        for w in self._writers:
            getattr(w, name)(*args, **kwargs)

    def write_summaries(self, step, values, metadata=None):
        self._each("write_summaries", step, values, metadata)

    def write_scalars(self, step, scalars):
        self._each("write_scalars", step, scalars)

    def write_images(self, step, images):
        self._each("write_images", step, images)

    def write_videos(self, step, videos):
        self._each("write_videos", step, videos)

    def write_audios(self, step, audios, *, sample_rate):
        self._each("write_audios", step, audios, sample_rate=sample_rate)

    def write_texts(self, step, texts):
        self._each("write_texts", step, texts)

    def write_histograms(self, step, arrays, num_buckets=None):
        self._each("write_histograms", step, arrays, num_buckets)

    def write_hparams(self, hparams):
        self._each("write_hparams", hparams)

    def flush(self):
        self._each("flush")

    def close(self):
        self._each("close")
