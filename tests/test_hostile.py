"""Hostile-input suite for workdirs (issue 20): damaged caches, two runs on one workdir, damaged
checkpoints, silent overwrites and wrong labels, out-of-range configs. Each test names the case
of the issue it covers; all use tiny inputs and no training (the engine cases that train are in
tests/test_hostile_engine.py).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from fast_jax import configure

configure()  # before jax is imported: the shared compilation cache, fast-compile flags

import h5py  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from jaxsynth.cli import main  # noqa: E402
from jaxsynth.errors import UserError  # noqa: E402
from jaxsynth.study.stages import Stage, StageRunner  # noqa: E402
from jaxsynth.validate import (  # noqa: E402
    changed_keys,
    check_train_config,
    os_error_line,
    strict_json,
)
from jaxsynth.workdir_lock import WorkdirBusy, WorkdirLock  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


# ---- case 1: the stage cache verifies its outputs ------------------------------------------


def _config(**kw):
    c = ml_collections.ConfigDict({"seed": 0, "a": {"x": 1}, "b": {"y": 2}})
    for k, v in kw.items():
        c[k.split("__")[0]][k.split("__")[1]] = v
    return c


def _stages(calls, workdir: Path):
    def make(name):
        def fn(ctx):
            calls.append(name)
            deps = {d: ctx.input(d)["value"] for d in ctx.stage.inputs}
            cfg = [
                str(ctx.config[k.split(".")[0]][k.split(".")[1]])
                for k in ctx.stage.config_keys
                if "." in k
            ]
            value = f"{name}{''.join(cfg)}({','.join(f'{k}={v}' for k, v in deps.items())})"
            (ctx.dir / "out.txt").write_text(value)
            return {"value": value}

        return fn

    def report(ctx):
        calls.append("report")
        text = " + ".join(ctx.input(d)["value"] for d in ctx.stage.inputs)
        (ctx.dir / "report.md").write_text(text)
        return {"value": text}

    return [
        Stage("split", make("split"), config_keys=("seed",)),
        Stage("gen_a", make("gen_a"), config_keys=("a.x",), inputs=("split",)),
        Stage("gen_b", make("gen_b"), config_keys=("b.y",), inputs=("split",)),
        Stage("report", report, inputs=("gen_a", "gen_b"), outputs=("report.md",)),
    ]


def _run(tmp_path, calls, lines, verify=False, **cfg):
    runner = StageRunner(tmp_path, _config(**cfg), log=lines.append, verify=verify)
    return runner, runner.run(_stages(calls, tmp_path))


def test_deleted_or_edited_report_is_restored_from_its_stage(tmp_path):
    calls, lines = [], []
    runner, _ = _run(tmp_path, calls, lines)
    first = (tmp_path / "report.md").read_text()
    assert (runner.dirs["report"] / "report.md").read_text() == first  # published copy
    for damage in ("delete", "edit"):
        if damage == "delete":
            (tmp_path / "report.md").unlink()
        else:
            (tmp_path / "report.md").write_text("edited by hand")
        calls.clear()
        lines.clear()
        _run(tmp_path, calls, lines)
        assert calls == []  # nothing recomputed: the stage directory holds the report
        assert (tmp_path / "report.md").read_text() == first
        assert any("report: report.md restored from report-" in x for x in lines)


def test_report_deleted_from_its_stage_reruns_it(tmp_path):
    calls, lines = [], []
    runner, _ = _run(tmp_path, calls, lines)
    first = (tmp_path / "report.md").read_text()
    (runner.dirs["report"] / "report.md").unlink()
    calls.clear()
    lines.clear()
    _run(tmp_path, calls, lines)
    assert calls == ["report"] and (tmp_path / "report.md").read_text() == first
    assert any("report: running" in x and "report.md is missing" in x for x in lines)


def test_deleted_stage_file_reruns_it_and_its_dependants(tmp_path):
    calls, lines = [], []
    runner, _ = _run(tmp_path, calls, lines)
    (runner.dirs["gen_a"] / "out.txt").unlink()
    calls.clear()
    lines.clear()
    runner, _ = _run(tmp_path, calls, lines)
    assert calls == ["gen_a", "report"]
    assert any("gen_a: running" in x and "out.txt is missing" in x for x in lines)
    assert any("report: running" in x and "its input gen_a is rerun" in x for x in lines)
    calls.clear()
    _run(tmp_path, calls, lines)
    assert calls == []  # and now everything verifies again


def test_truncated_result_json_reruns_without_traceback(tmp_path):
    calls, lines = [], []
    runner, _ = _run(tmp_path, calls, lines)
    path = runner.dirs["gen_b"] / "result.json"
    path.write_text(path.read_text()[:7])
    calls.clear()
    lines.clear()
    _, results = _run(tmp_path, calls, lines)
    assert calls == ["gen_b", "report"]
    assert results["gen_b"]["value"] == "gen_b2(split=split())"
    assert any("result.json unreadable (JSONDecodeError)" in x for x in lines)


def test_same_size_damage_found_by_verify_or_when_a_dependant_reads_it(tmp_path):
    calls, lines = [], []
    runner, _ = _run(tmp_path, calls, lines)
    out = runner.dirs["gen_a"] / "out.txt"
    out.write_text(out.read_text().upper())  # same size, other content
    calls.clear()
    _run(tmp_path, calls, lines)
    assert calls == []  # the quick check is sizes only
    _run(tmp_path, calls, lines, verify=True)
    assert calls == ["gen_a", "report"]
    # damage again, then change what only gen_b reads: report reruns and reads gen_a, so gen_a
    # is hashed in full first and rerun
    out.write_text(out.read_text().upper())
    calls.clear()
    lines.clear()
    _run(tmp_path, calls, lines, b__y=5)
    assert calls == ["gen_a", "gen_b", "report"]
    assert any("out.txt does not match its recorded SHA-256" in x for x in lines)


def test_report_of_another_config_is_not_passed_off_as_cached(tmp_path):
    calls, lines = [], []
    _run(tmp_path, calls, lines)
    first = (tmp_path / "report.md").read_text()
    _run(tmp_path, calls, lines, b__y=7)  # overwrites report.md
    assert (tmp_path / "report.md").read_text() != first
    calls.clear()
    _run(tmp_path, calls, lines)
    # the first config's report stage is still cached: republished, not recomputed
    assert calls == [] and (tmp_path / "report.md").read_text() == first


# A stage pipeline in a child process; stage "big" writes its output slowly, in chunks.
KILL_CHILD = textwrap.dedent(
    """
    import sys, time, hashlib
    from pathlib import Path
    import ml_collections
    from jaxsynth.study.stages import Stage, StageRunner
    work = Path(sys.argv[1]); slow = float(sys.argv[2])
    def small(ctx):
        (ctx.dir / "a.bin").write_bytes(b"a" * 1000)
        return {"n": 1}
    def big(ctx):
        with open(ctx.dir / "big.bin", "wb") as f:
            for i in range(40):
                f.write(hashlib.sha256(str(i).encode()).digest() * 512)
                f.flush()
                if i == 20:
                    (work / "halfway").write_text("1")
                time.sleep(slow)
        return {"n": 2}
    def report(ctx):
        data = (ctx.input_dir("big") / "big.bin").read_bytes()
        (ctx.dir / "report.md").write_text(hashlib.sha256(data).hexdigest())
        return {"n": 3}
    c = ml_collections.ConfigDict({"seed": 0})
    StageRunner(work, c).run([
        Stage("small", small, config_keys=("seed",)),
        Stage("big", big, inputs=("small",)),
        Stage("report", report, inputs=("big",), outputs=("report.md",)),
    ])
    """
)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "halfway"
    }


def test_kill9_during_a_stage_output_write_finishes_bitwise(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(KILL_CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, str(script), str(straight), "0"], check=True, env=env)
    killed = tmp_path / "killed"
    victim = subprocess.Popen([sys.executable, str(script), str(killed), "0.05"], env=env)
    while not (killed / "halfway").exists():
        assert victim.poll() is None
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (killed / "report.md").exists()
    subprocess.run([sys.executable, str(script), str(killed), "0"], check=True, env=env)
    assert _tree(killed) == _tree(straight)


def test_deleted_or_truncated_split_arrays_are_rebuilt(tmp_path, capsys):
    from jaxsynth.config import load_config
    from jaxsynth.data.split import load_or_build_split

    small = ["data.phantom.num_per_class=12", "data.split.train.normal=4"]
    small += [f"data.split.{s}.{c}=2" for s in ("val", "test") for c in ("normal", "tumour")]
    config = load_config("rare_tumour:smoke", small + ["data.split.train.tumour=4"])
    first = load_or_build_split(config, tmp_path, progress=False)
    arrays = next((tmp_path / "split").glob("*/arrays.npz"))
    for damage in ("truncate", "delete"):
        if damage == "truncate":
            arrays.write_bytes(arrays.read_bytes()[:1000])
        else:
            arrays.unlink()
        capsys.readouterr()
        again = load_or_build_split(config, tmp_path, progress=False)
        assert "is damaged" in capsys.readouterr().err
        np.testing.assert_array_equal(again.train.images, first.train.images)
        np.testing.assert_array_equal(again.test.labels, first.test.labels)


# ---- case 2: one run per workdir -------------------------------------------------------------


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    with WorkdirLock(tmp_path, "train"):
        with pytest.raises(WorkdirBusy) as err:
            WorkdirLock(tmp_path, "run").acquire()
    message = str(err.value)
    assert f"pid {os.getpid()}" in message and "'train'" in message and "\n" not in message
    WorkdirLock(tmp_path, "run").acquire().release()  # released on exit


def test_cli_commands_refuse_a_locked_workdir(tmp_path, capsys):
    work = tmp_path / "w"
    with WorkdirLock(work, "train"):
        for argv in (
            ["train", "--config", "dcgan:smoke", "--workdir", str(work)],
            ["run", "--config", "rare_tumour:smoke", "--workdir", str(work)],
            ["sweep", "--config", "ratio_sweep:smoke", "--workdir", str(work)],
        ):
            capsys.readouterr()
            assert main(argv) == 2, argv
            err = capsys.readouterr().err.strip()
            # (when another test of this process initialised jax first, the CLI also warns
            # that its XLA flags come too late: not part of the refusal)
            lines = [x for x in err.splitlines() if not x.startswith("jaxsynth: XLA flags")]
            assert len(lines) == 1 and "is in use by 'train'" in lines[0], err


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path):
    code = (
        "import sys, time; from jaxsynth.workdir_lock import WorkdirLock;"
        "WorkdirLock(sys.argv[1], 'train').acquire(); print('held', flush=True); time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirBusy, match=f"pid {child.pid}"):
        WorkdirLock(tmp_path, "run").acquire()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    notes = []

    class Stream:
        def write(self, s):
            notes.append(s)

        def flush(self):
            pass

    lock = WorkdirLock(tmp_path, "run", stream=Stream()).acquire()
    text = "".join(notes)
    assert f"pid {child.pid}" in text and "no longer running; taking it over" in text
    assert json.loads((tmp_path / ".jaxsynth.lock").read_text())["pid"] == os.getpid()
    lock.release()


# ---- case 4: no silent overwrite, no silent wrong truth -------------------------------------


def test_sample_refuses_a_non_empty_out_folder(tmp_path, capsys):
    out = tmp_path / "S"
    out.mkdir()
    (out / "mine.png").write_bytes(b"precious")
    rc = main(["sample", "--workdir", str(tmp_path / "w"), "--num", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "folder is not empty" in err and "--overwrite" in err
    assert (out / "mine.png").read_bytes() == b"precious"
    # with --overwrite it gets past the check (and fails on the missing run, not on --out)
    rc = main(
        ["sample", "--workdir", str(tmp_path / "w"), "--num", "2", "--out", str(out)]
        + ["--overwrite"]
    )
    assert rc == 2 and "train there first" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # a mistyped --workdir is not created


def _images(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_reader_study_refuses_overlapping_sets(tmp_path, capsys):
    _images(tmp_path / "R", 4, 0)
    _images(tmp_path / "S", 4, 1)
    # one synthetic file is a real image under another name (and format-independent: pixels)
    Image.open(tmp_path / "R" / "2.png").save(tmp_path / "S" / "copy.bmp")
    base = ["reader-study", "create", "--n", "4", "--raters", "1", "--out", str(tmp_path / "o")]
    for syn in ("R", "S"):
        capsys.readouterr()
        rc = main(base + ["--real", str(tmp_path / "R"), "--synthetic", str(tmp_path / syn)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "identical image" in err and "disjoint" in err, err
        assert "\n" not in err and not (tmp_path / "o").exists()
    (tmp_path / "S" / "copy.bmp").unlink()
    assert main(base + ["--real", str(tmp_path / "R"), "--synthetic", str(tmp_path / "S")]) == 0


def _pcam(root: Path, y: np.ndarray) -> None:
    root.mkdir(exist_ok=True)
    n = 6
    x = np.random.default_rng(0).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    for split in ("train", "valid", "test"):
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f["x"] = x
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f["y"] = y


@pytest.mark.parametrize(
    "shape",
    ["n1111", "n", "n1", "onehot", "scalar", "n3", "bad_onehot"],
)
def test_pcam_label_shapes(tmp_path, capsys, shape):
    from jaxsynth.data.sources import open_source

    truth = np.array([0, 1, 1, 0, 1, 0], np.uint8)
    y = {
        "n1111": truth.reshape(6, 1, 1, 1),
        "n": truth,
        "n1": truth.reshape(6, 1),
        "onehot": np.eye(2, dtype=np.uint8)[truth],
        "scalar": np.uint8(1),
        "n3": np.zeros((6, 3), np.uint8),
        "bad_onehot": np.ones((6, 2), np.uint8),
    }[shape]
    _pcam(tmp_path, y)
    if shape in ("scalar", "n3", "bad_onehot"):
        with pytest.raises(UserError, match="expected one 0/1 label per image"):
            open_source(f"pcam_h5:{tmp_path}")
        return
    src = open_source(f"pcam_h5:{tmp_path}")
    labels = [src.label_of(i) for i in range(len(src))]
    assert labels == list(truth) * 3  # onehot: argmax, not column 0 (which inverts)
    if shape == "onehot":
        assert "one-hot" in capsys.readouterr().err


# ---- case 5: validation, strict JSON, one-line errors -----------------------------------------


@pytest.mark.parametrize(
    "override,message",
    [
        ("num_steps=-5", "num_steps=-5: must be ≥ 0"),
        ("batch_size=0", "batch_size=0: must be > 0"),
        ("checkpoint_every=-1", "checkpoint_every=-1: must be ≥ 0"),
    ],
)
def test_train_refuses_out_of_range_values_in_one_line(tmp_path, capsys, override, message):
    rc = main(
        ["train", "--config", "dcgan:smoke", "--workdir", str(tmp_path), f"--config.{override}"]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err, err
    assert not (tmp_path / "checkpoints").exists()


def test_batch_size_must_divide_by_devices():
    c = ml_collections.ConfigDict({"num_steps": 1, "batch_size": 6, "image_size": 16})
    with pytest.raises(UserError, match="not divisible by 4 devices"):
        check_train_config(c, 4)
    check_train_config(c, 3)


def test_unsupported_image_size_is_one_line(tmp_path):
    import jax

    from jaxsynth.config import load_config
    from jaxsynth.train.checkpoint import abstract_state
    from jaxsynth.train.mesh import make_mesh, replicated
    from jaxsynth.train.task import build_task

    config = load_config("dcgan:smoke", ["image_size=48"])
    batch = {"image": np.zeros((2, 48, 48, 3), np.float32), "label": np.zeros((2,), np.int32)}
    with pytest.raises(UserError) as err:
        abstract_state(
            build_task(config), jax.random.PRNGKey(0), batch, replicated(make_mesh()), 48
        )
    assert "image_size=48" in str(err.value) and "power of two" in str(err.value)


def test_changed_keys_lists_old_and_new():
    saved = {"image_size": 16, "model": {"width": 8}, "num_steps": 6}
    now = {"image_size": 32, "model": {"width": 8}, "num_steps": 6}
    assert changed_keys(saved, now) == ["image_size (16 → 32)"]


def test_strict_json_replaces_non_finite_with_null_and_lists_them():
    obj, bad = strict_json({"psnr": {"mean": float("inf")}, "x": [1.0, float("nan")]})
    assert obj == {"psnr": {"mean": None}, "x": [1.0, None]}
    assert bad == ["psnr.mean=inf", "x[1]=nan"]
    json.dumps(obj, allow_nan=False)


def test_eval_json_is_strict_and_one_image_is_one_line(tmp_path, capsys):
    _images(tmp_path / "R", 3, 0)
    out = tmp_path / "m.json"
    argv = ["eval", "--real", str(tmp_path / "R"), "--fake", str(tmp_path / "R")]
    assert main(argv + ["--metrics", "psnr,ssim", "--json", str(out)]) == 0
    text = out.read_text()
    assert "Infinity" not in text and "NaN" not in text
    result = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert result["psnr"]["mean"] is None and "psnr.mean=inf" in result["nonfinite"]
    _images(tmp_path / "one", 1, 3)
    capsys.readouterr()
    assert main(["eval", "--real", str(tmp_path / "R"), "--fake", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--fake" in err and "at least 2 per set" in err and "\n" not in err


def test_damaged_feature_cache_is_recomputed(tmp_path, capsys):
    from jaxsynth.eval.fid import cached_features, cached_statistics

    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)

    def extract(x):
        return x.reshape(len(x), -1)[:, :4].astype(np.float32)

    want = cached_features(images, extract, "px", tmp_path)
    (path,) = tmp_path.glob("features_*.npy")
    path.write_bytes(path.read_bytes()[:90])
    got = cached_features(images, extract, "px", tmp_path)
    np.testing.assert_array_equal(got, want)
    assert "is damaged" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(path), want)  # and the cache is repaired
    mu, sigma = cached_statistics(images, extract, "px", tmp_path)
    (stats,) = tmp_path.glob("fid_stats_*.npz")
    stats.write_bytes(b"not a zip")
    mu2, sigma2 = cached_statistics(images, extract, "px", tmp_path)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)


def test_full_disk_and_permission_errors_are_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "checkpoints" / "3").mkdir(parents=True)
    (tmp_path / "checkpoints" / "6").mkdir()
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoints" / "9"))
    line = os_error_line(RuntimeError("wrapped"), None)
    assert line is None  # a bug keeps its traceback
    wrapped = ValueError("orbax save failed")
    wrapped.__cause__ = full
    line = os_error_line(wrapped, tmp_path)
    assert line.startswith("no space left on device: ") and "steps 3, 6" in line

    from jaxsynth.commands import train as train_cmd

    def boom(args):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "tb"))

    monkeypatch.setattr(train_cmd, "run", boom)
    rc = main(["train", "--config", "dcgan:smoke", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err
    assert f"permission denied: {tmp_path / 'tb'}" in err and "steps 3, 6" in err


def test_resume_with_changed_shapes_is_refused_and_restart_starts_over(tmp_path, capsys):
    base = ["train", "--config", "dcgan:smoke", "--workdir", str(tmp_path), "--config.num_steps=0"]
    assert main(base) == 0
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    capsys.readouterr()
    assert main(base + ["--config.model.g_base_width=16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot resume from step 0" in err
    assert "model.g_base_width (8 → 16)" in err and "--restart" in err
    # a change that keeps every shape resumes (note only)
    assert main(base + ["--config.optim.g_lr=0.001"]) == 0
    assert "resuming from step 0" in capsys.readouterr().out
    assert main(base + ["--config.model.g_base_width=16", "--restart"]) == 0
    out = capsys.readouterr().out
    (kept,) = tmp_path.glob("restarted-*")
    assert f"kept in {kept}" in out and "resuming" not in out
    assert (kept / "checkpoints" / "0").is_dir() and (kept / "metrics.jsonl").read_text() == "{}\n"
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["g_base_width"] == 16


def test_exif_orientation_is_applied_and_reported(tmp_path):
    from jaxsynth.data.imageio import decode_image

    pixels = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "sideways.png", exif=exif)
    image, conversions = decode_image(tmp_path / "sideways.png", name="sideways.png")
    np.testing.assert_array_equal(image, np.rot90(pixels, k=-1))
    assert "EXIF orientation 6 applied" in conversions
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    image, conversions = decode_image(tmp_path / "plain.png", name="plain.png")
    np.testing.assert_array_equal(image, pixels)
    assert conversions == []


def test_fifos_and_symlink_loops_are_listed_as_skipped(tmp_path, capsys):
    for cls in ("normal", "tumour"):
        _images(tmp_path / "root" / cls, 2, 0 if cls == "normal" else 1)
    tumour = tmp_path / "root" / "tumour"
    os.mkfifo(tumour / "pipe.png")
    os.symlink(tumour / "loop_b.png", tumour / "loop_a.png")
    os.symlink(tumour / "loop_a.png", tumour / "loop_b.png")
    os.symlink(tumour / "gone.png", tumour / "broken.png")
    rc = main(["data", "inspect", "--source", f"folder:{tmp_path / 'root'}", "--no-progress"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["usable"] == {"normal": 2, "tumour": 2}
    items = json.dumps(summary["skipped_items"])
    for name, why in (
        ("pipe.png", "FIFO"),
        ("loop_a.png", "symlink loop"),
        ("loop_b.png", "symlink loop"),
        ("broken.png", "broken symlink"),
    ):
        assert name in items and why in items, (name, items)
    assert summary["skipped"] == 4
    # eval lists them too
    rc = main(
        ["eval", "--real", str(tumour), "--fake", str(tmp_path / "root" / "normal")]
        + ["--metrics", "ssim"]
    )
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and {s["file"] for s in result["skipped"]} == {
        "pipe.png",
        "loop_a.png",
        "loop_b.png",
        "broken.png",
    }


def test_damaged_reader_study_database_is_one_line(tmp_path, capsys):
    _images(tmp_path / "R", 2, 0)
    _images(tmp_path / "S", 2, 1)
    study = tmp_path / "study"
    argv = ["reader-study", "create", "--real", str(tmp_path / "R"), "--synthetic"]
    assert main(argv + [str(tmp_path / "S"), "--n", "4", "--raters", "1", "--out", str(study)]) == 0
    (db,) = [p for p in study.iterdir() if p.suffix in (".sqlite", ".db", ".sqlite3")]
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    capsys.readouterr()
    assert main(["reader-study", "results", str(study)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the study database is damaged" in err and str(db) in err
