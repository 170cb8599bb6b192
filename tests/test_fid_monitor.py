"""FID during training (`train.fid_every`): the monitor against the eval module, and the hook
writing the curve through `jaxsynth train` on the phantom."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jaxsynth.cli import main
from jaxsynth.eval import fid
from jaxsynth.eval.features import PixelExtractor
from jaxsynth.eval.monitor import FidMonitor

REPO = Path(__file__).resolve().parent.parent


def test_monitor_equals_fid_from_features_and_orders_sets():
    rng = np.random.default_rng(0)
    heldout = rng.integers(80, 180, (64, 16, 16, 3)).astype(np.uint8)
    close = np.clip(heldout.astype(int) + rng.integers(-5, 6, heldout.shape), 0, 255)
    far = rng.integers(0, 256, (64, 16, 16, 3)).astype(np.uint8)
    px = PixelExtractor(4)
    monitor = FidMonitor(px, heldout)
    assert monitor.key == "fid_domain"  # anything but Inception is labelled as such
    got = monitor(far)
    assert got == pytest.approx(fid.fid_from_features(px(heldout), px(far)), rel=1e-6)
    assert monitor(close.astype(np.uint8)) < got


def test_train_writes_a_fid_curve_with_domain_features(tmp_path):
    workdir = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            str(REPO / "configs" / "dcgan.py") + ":smoke",
            "--workdir",
            str(workdir),
            "--config.num_steps=4",
            "--config.train.fid_every=2",
            "--config.train.fid_samples=16",
        ]
    )
    assert code == 0
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    fids = {r["step"]: r["fid_domain"] for r in records if "fid_domain" in r}
    assert sorted(fids) == [2, 4] and all(np.isfinite(v) and v >= 0 for v in fids.values())
    assert (workdir / "fid_curve.png").stat().st_size > 1000
