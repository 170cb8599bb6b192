"""The main job end to end on a tiny config: report contents, caching, resume, leakage guard."""

import copy
import json

import numpy as np
import pytest

from jaxsynth.cli import main
from jaxsynth.commands.compare import compare_results
from jaxsynth.config import load_config
from jaxsynth.data.split import LeakageError, load_split, pixel_hash
from jaxsynth.study.rare_tumour import build_stages, run_study
from jaxsynth.study.stages import StageRunner

OVERRIDES = ["--config.generators=('dcgan',)"]


def _config(*extra):
    return load_config("rare_tumour:smoke", OVERRIDES + list(extra))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(workdir, results.json of the default config as first written).

    Several tests below rerun the study in this workdir with other settings (fewer epochs, more
    feature spaces), which rewrites results.json; under pytest-xdist any subset of them may run
    before a given test, so tests that compare with the default run read this snapshot, never
    the file on disk.
    """
    workdir = tmp_path_factory.mktemp("study")
    run_study(_config(), workdir)
    return workdir, json.loads((workdir / "results.json").read_text())


def test_report_has_every_arm_with_cis(study):
    workdir, res = study
    assert set(res["arms"]) | set(res["skipped_arms"]) == {
        "original",
        "dcgan",
        "dcgan_synthetic_only",
        "dcgan_selective",
        "dcgan_classical",
        "dcgan_oversample",
    }
    orig = res["arms"]["original"]
    assert orig["seeds"] == [0, 1]
    for m in ("accuracy", "f1", "roc_auc"):
        lo, hi = orig["metrics"][m]["ci95"]
        assert 0.0 <= lo <= hi <= 1.0
        assert len(orig["metrics"][m]["per_seed"]) == 2
    # The point estimate is the seed mean of metrics recomputed from the stored probabilities.
    from sklearn.metrics import f1_score, roc_auc_score

    split = load_split(next((workdir / "stages").glob("split-*")) / "split")
    y = split.test.labels
    arm_dirs = sorted((workdir / "stages").glob("arm_original_s*"))
    f1s, aucs = [], []
    for d in arm_dirs:
        r = json.loads((d / "result.json").read_text())
        p = np.asarray(r["test_probs"])
        f1s.append(f1_score(y, p >= r["threshold"]))
        aucs.append(roc_auc_score(y, p))
    assert orig["metrics"]["f1"]["mean"] == pytest.approx(np.mean(f1s))
    assert orig["metrics"]["roc_auc"]["mean"] == pytest.approx(np.mean(aucs))
    for f in (
        "report.md",
        "results.csv",
        "figures/roc_curves.png",
        "figures/classifier_losses.png",
        "figures/confusion_matrices.png",
        "figures/dcgan_grid.png",
    ):
        assert (workdir / f).is_file(), f
    md = (workdir / "report.md").read_text()
    assert "simulated" in md and "tumour F1" in md


def test_test_split_is_real_only_and_disjoint_from_generator_data(study):
    workdir, _ = study
    split = load_split(next((workdir / "stages").glob("split-*")) / "split")
    test_hashes = set(split.test.hashes) | set(split.val.hashes)
    (gen_dir,) = (workdir / "stages").glob("sample_dcgan_g0-*")
    with np.load(gen_dir / "synthetic.npz") as z:
        synthetic = z["images"]
    assert not test_hashes & {pixel_hash(x) for x in synthetic}
    assert not test_hashes & set(split.train.hashes)
    # every test id comes from the source, none is synthetic
    assert all(i.startswith("phantom/") for i in split.test.ids)


def test_rerun_is_cached_and_a_config_change_reruns_only_dependants(study):
    workdir, _ = study
    runner = StageRunner(workdir, _config())
    runner.run(build_stages(_config()))
    assert runner.ran == []
    cfg = _config("--config.eval.bootstrap=50")
    runner = StageRunner(workdir, cfg)
    runner.run(build_stages(cfg))
    assert runner.ran == ["report"]
    cfg = _config("--config.classifier.epochs=1")
    runner = StageRunner(workdir, cfg)
    runner.run(build_stages(cfg))
    assert not any(n.startswith(("gen_", "sample_", "split")) for n in runner.ran)
    assert "arm_original_s0" in runner.ran and "report" in runner.ran


def test_killed_run_resumes_at_the_first_unfinished_stage(study):
    workdir, _ = study
    import shutil

    # Simulate a kill during the arm stages: the last arms and the report never finished.
    for d in list((workdir / "stages").glob("arms_dcgan*")) + list(
        (workdir / "stages").glob("report-*")
    ):
        shutil.rmtree(d)
    runner = StageRunner(workdir, _config())
    runner.run(build_stages(_config()))
    assert runner.ran and all(n.startswith(("arms_dcgan", "report")) for n in runner.ran)
    assert "gen_dcgan_g0" in runner.skipped and "split" in runner.skipped


def test_leakage_guard_fails_loudly_on_a_planted_test_image(tmp_path, monkeypatch):
    from jaxsynth.study import rare_tumour

    build = rare_tumour.build_split

    def buggy_split(config, progress=True):
        # One test image planted into the training split (as a buggy split would), with the
        # manifest kept consistent so only the leakage guard can notice.
        split = build(config, progress=progress)
        tumour = split.label_of("tumour")
        i_test = int(np.flatnonzero(split.test.labels == tumour)[0])
        i_train = int(np.flatnonzero(split.train.labels == tumour)[0])
        split.train.images[i_train] = split.test.images[i_test]
        entries = split.manifest["splits"]
        entries["train"][i_train]["sha256"] = entries["test"][i_test]["sha256"]
        split.train.hashes[i_train] = split.test.hashes[i_test]
        return split

    monkeypatch.setattr(rare_tumour, "build_split", buggy_split)
    cfg = _config()
    stages = build_stages(cfg)
    with pytest.raises(LeakageError, match="generator 'dcgan'"):
        StageRunner(tmp_path, cfg).run([s for s in stages if s.name in ("split", "gen_dcgan_g0")])
    # and again when the (buggy) split comes from the cache, read back from its stage dir
    with pytest.raises(LeakageError, match="generator 'dcgan'"):
        StageRunner(tmp_path, cfg).run([s for s in stages if s.name in ("split", "gen_dcgan_g0")])


def test_ratio_sweep_shares_the_cache_and_reports_each_point(study):
    from jaxsynth.study.sweep import run_sweep

    workdir, _ = study
    cfg = load_config(
        "ratio_sweep:smoke", OVERRIDES + ["--config.synthetic.memorization_filter=false"]
    )
    run_sweep(cfg, workdir)
    res = json.loads((workdir / "sweep.json").read_text())
    rows = {r["fraction"]: r for r in res["rows"]}
    assert sorted(rows) == [0.0, 0.5, 1.0]
    n_real = rows[0.0]["real_minority"]
    assert rows[0.5]["synthetic"] == n_real and rows[0.5]["real_minority"] == n_real
    assert rows[1.0]["real_minority"] == 0 and rows[1.0]["synthetic"] >= n_real
    for r in rows.values():
        assert 0 <= r["f1_ci_low"] <= r["f1_mean"] + 1e-9 <= r["f1_ci_high"] + 2e-9 <= 1 + 2e-9
    assert (workdir / "figures" / "ratio_sweep.png").is_file()
    # the original arm came from the study's cache: identical numbers
    assert rows[0.0]["f1_mean"] == pytest.approx(
        study[1]["arms"]["original"]["metrics"]["f1"]["mean"]
    )


def test_ratio_arm_counts_in_both_designs():
    from jaxsynth.study.sweep import synthetic_needed

    assert synthetic_needed(80, 0.5, "add", 0.9) == 80
    assert synthetic_needed(80, 0.9, "add", 0.9) == 720
    assert synthetic_needed(80, 1.0, "add", 0.9) == 720
    assert synthetic_needed(80, 0.25, "replace", 0.9) == 20
    assert synthetic_needed(80, 1.0, "replace", 0.9) == 80


# --- Verdicts (issue 19): generator seeds, controls, hierarchical intervals, compare ----------


def _results(study):
    return copy.deepcopy(study[1])


def test_stages_per_generator_seed(tmp_path):
    cfg = load_config("rare_tumour:smoke", OVERRIDES)
    names = [s.name for s in build_stages(cfg)]
    for k in (0, 1):
        for kind in ("gen", "sample", "synth", "arms"):
            assert f"{kind}_dcgan_g{k}" in names
    assert names[-1] == "report"


def test_every_arm_has_runs_per_generator_and_classifier_seed_and_a_verdict(study):
    res = _results(study)
    h = res["hierarchical"]
    assert set(h) == set(res["arms"])
    assert sorted(map(tuple, h["dcgan"]["runs"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert h["original"]["runs"] == [[None, 0], [None, 1]]
    for arm, v in res["verdicts"].items():
        assert v.startswith(f"{arm}: ")
    assert set(h["dcgan"]["vs"]) == {"original", "dcgan_classical"}
    split = h["dcgan"]["metrics"]["pr_auc"]["variance"]
    assert split["generator_seeds"] == 2 and np.isfinite(split["contribution"]["test_set"])
    for m in ("f1", "pr_auc", "roc_auc", "sens_at_spec95", "brier"):
        d = h["dcgan"]["vs"]["original"][m]
        assert d["ci95"][0] <= d["ci95"][1] and d["verdict"] in ("better", "no evidence", "worse")
    assert res["provenance"]["seeds"]["generator_seeds"] == [0, 1]
    assert "jax" in res["provenance"]["libraries"]
    assert len(res["threshold_stability"]["dcgan"]["thresholds"]) == 4


def test_controls_have_the_generator_arms_count(study):
    res = _results(study)
    counts = {a: res["arms"][a]["counts"] for a in ("dcgan", "dcgan_classical", "dcgan_oversample")}
    assert counts["dcgan_classical"] == counts["dcgan"] == counts["dcgan_oversample"]


def test_report_has_verdicts_and_forest_plot(study):
    workdir, _ = study
    md = (workdir / "report.md").read_text()
    assert "## Verdicts (hierarchical intervals)" in md and "- dcgan: " in md
    assert "## Threshold stability" in md and "## Provenance" in md
    assert (workdir / "figures" / "forest.png").is_file()


def test_compare_same_run_agrees_and_a_flipped_verdict_is_reported(study, tmp_path, capsys):
    res = _results(study)
    workdir = tmp_path / "a"  # the default run's results (the shared workdir may hold a rerun's)
    workdir.mkdir()
    (workdir / "results.json").write_text(json.dumps(res))
    assert main(["compare", str(workdir), str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "0 of" in out and "verdicts differ" in out
    other = copy.deepcopy(res)
    d = other["hierarchical"]["dcgan"]["vs"]["original"]["pr_auc"]
    d["verdict"] = "worse" if d["verdict"] != "worse" else "better"
    d["ci95"] = [d["ci95"][1] + 1.0, d["ci95"][1] + 2.0]
    other["provenance"]["machine"]["jax_backend"] = "gpu"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(json.dumps(other))
    rows = compare_results(res, other)
    bad = [r for r in rows["rows"] if not r["same_verdict"]]
    assert [(r["arm"], r["vs"], r["metric"]) for r in bad] == [("dcgan", "original", "pr_auc")]
    assert not bad[0]["overlap"]
    assert rows["provenance_changes"]["machine.jax_backend"][1] == "gpu"
    assert main(["compare", str(workdir), str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS" in out and "1 of" in out and "jax_backend" in out


def test_more_feature_spaces_rerun_only_their_stages_and_the_report(study):
    """`eval.extractors`: the SSL encoder (trained on the training split) and a space per
    generator seed; no generator or classifier reruns, FD in each space lands in the report."""
    from jaxsynth.eval.features import PixelExtractor
    from jaxsynth.eval.fid import fid_from_features

    workdir, _ = study
    cfg = _config("--config.eval.extractors=('ssl','pixels')")
    runner = StageRunner(workdir, cfg)
    runner.run(build_stages(cfg))
    assert sorted(runner.ran) == [
        "encoder_ssl",
        "report",
        "spaces_dcgan_g0",
        "spaces_dcgan_g1",
    ]
    res = json.loads((workdir / "results.json").read_text())["feature_spaces"]
    assert set(res["fd"]) == {"domain", "ssl", "pixels"}
    assert len(res["fd"]["ssl"]["dcgan"]["fd_per_seed"]) == 2  # both generator seeds
    assert "## Feature spaces" in (workdir / "report.md").read_text()
    # the pixel-space FD is what the metric gives on the stage's own inputs
    split = load_split(runner.dirs["split"] / "split")
    tumour = split.label_of("tumour")
    real = np.concatenate(
        [split.val.of_classes([tumour]).images, split.test.of_classes([tumour]).images]
    )
    with np.load(runner.dirs["sample_dcgan_g0"] / "synthetic.npz") as z:
        fake = z["images"]
    px = PixelExtractor(16)
    want = fid_from_features(px(real), px(fake))
    assert res["per_stage"]["spaces_dcgan_g0"]["fd_pixels"] == pytest.approx(want, rel=1e-9)
    # the encoder saw only training tiles
    enc = json.loads((runner.dirs["encoder_ssl"] / "result.json").read_text())
    assert enc["train_tiles"] == len(split.train)
