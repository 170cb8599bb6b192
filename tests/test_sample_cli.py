"""`jaxsynth sample` on a DDPM run: sampler options and mask-guided sampling from a folder."""

import json

import numpy as np
from PIL import Image

from jaxsynth.cli import main


def test_ddpm_sample_with_masks_and_options(tmp_path, capsys):
    work = tmp_path / "run"
    rc = main(
        [
            "train",
            "--config",
            "ddpm:smoke,mask",
            "--workdir",
            str(work),
            "--config.num_steps=2",
            "--config.checkpoint_every=2",
        ]
    )
    assert rc == 0
    masks = tmp_path / "masks"
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        m = (rng.random((16, 16)) > 0.7).astype(np.uint8) * 255
        Image.fromarray(m).save(masks / f"m{i}.png")
    out = tmp_path / "out"
    args = ["sample", "--workdir", str(work), "--out", str(out), "--masks", str(masks)]
    rc = main(args + ["--sampler", "ddim", "--steps", "3", "--eta", "0"])
    assert rc == 0
    side = json.loads((out / "samples.json").read_text())
    assert side["num"] == 3 and side["masks"] == ["m0.png", "m1.png", "m2.png"]
    assert 0.0 <= side["iou"] <= 1.0 and 0.0 <= side["iou_shuffled"] <= 1.0
    assert side["sampler_options"] == {"sampler": "ddim", "steps": 3, "eta": 0.0}
    with np.load(out / "samples.npz") as z:
        first = z["images"]
    assert first.shape == (3, 16, 16, 3) and len(list(out.glob("sample_*.png"))) == 3
    # eta = 0 DDIM is deterministic; a different step count gives different images
    rc = main(args[:-2] + ["--masks", str(masks), "--out", str(tmp_path / "o2"), "--steps", "3"])
    with np.load(tmp_path / "o2" / "samples.npz") as z:
        np.testing.assert_array_equal(z["images"], first)
    main(args[:-2] + ["--masks", str(masks), "--out", str(tmp_path / "o3"), "--steps", "2"])
    with np.load(tmp_path / "o3" / "samples.npz") as z:
        assert not np.array_equal(z["images"], first)
    capsys.readouterr()
    assert main(["sample", "--workdir", str(work), "--out", str(tmp_path / "o4")]) == 2
    assert "--num is required" in capsys.readouterr().err
