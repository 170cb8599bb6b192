"""K-fold cross-validation of the study (`study.cv_folds`): folds disjoint, covering and
stratified; per-fold stage keys; the leakage guard per fold; cv_folds=0 unchanged; the pooled
statistics against references; bad values are one-line errors; a 2-fold smoke study end to end."""

import json

import numpy as np
import pytest
from test_split import COUNTS, ToySource

from jaxsynth.config import config_to_dict, load_config
from jaxsynth.data import folds as folds_lib
from jaxsynth.data.split import LeakageError, build_study_split, load_split
from jaxsynth.errors import UserError
from jaxsynth.study import cv_report, verdicts
from jaxsynth.study.folds import fold_stages, num_folds
from jaxsynth.study.rare_tumour import DATA_KEYS, build_stages, run_study
from jaxsynth.study.stages import ALL_KEYS, StageRunner, stage_key

OVERRIDES = ["--config.generators=('dcgan',)"]


def _config(*extra):
    return load_config("rare_tumour:smoke", OVERRIDES + list(extra))


# --- the folds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_are_disjoint_covering_stratified_and_carved_from_the_pool(k):
    src = ToySource(n_normal=60, n_tumour=20)
    kw = dict(seed=3, image_size=8, counts=COUNTS)
    pool = build_study_split(
        src, seed=3, image_size=8, counts={"train": {"normal": 45, "tumour": 16}}
    )
    splits = [folds_lib.build_fold_split(src, num_folds=k, fold=f, **kw) for f in range(k)]
    tests = [set(s.test.ids) for s in splits]
    # disjoint and covering: every pool tile is in exactly one fold's test part
    assert sum(len(t) for t in tests) == len(pool.train) == 61
    assert set().union(*tests) == set(pool.train.ids)
    per_class = np.array([np.bincount(s.test.labels, minlength=2) for s in splits])
    assert (per_class.max(0) - per_class.min(0) <= 1).all()  # stratified within ±1 per class
    assert per_class.sum(1).max() - per_class.sum(1).min() <= 1
    assert per_class.sum(0).tolist() == [45, 16]
    for f, s in enumerate(splits):
        parts = [set(s.split(n).ids) for n in ("test", "val", "train")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set().union(*parts) == set(pool.train.ids)
        assert not set(s.test.hashes) & set(s.train.hashes)
        assert all(i.startswith("toy/") for i in s.test.ids)  # real tiles only
        for c, name in enumerate(("normal", "tumour")):  # val : train as configured, per class
            rest = per_class[:, c].sum() - per_class[f, c]
            v, t = COUNTS["val"][name], COUNTS["train"][name]
            assert (s.val.labels == c).sum() == int(np.floor(rest * v / (v + t) + 0.5))
        assert s.manifest["cv"] == {"num_folds": k, "fold": f, "pool": {"normal": 45, "tumour": 16}}
        assert [e["sha256"] for e in s.manifest["splits"]["test"]] == s.test.hashes
    again = folds_lib.build_fold_split(src, num_folds=k, fold=0, **kw)
    assert again.test.ids == splits[0].test.ids  # deterministic in the seed
    other = folds_lib.build_fold_split(src, num_folds=k, fold=0, **{**kw, "seed": 4})
    assert set(other.test.ids) != tests[0]


def test_fold_assignment_is_balanced_for_any_class_sizes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        labels = rng.integers(0, rng.integers(2, 5), rng.integers(10, 80))
        k = int(rng.integers(2, 7))
        f = folds_lib.assign_folds(labels, k, seed=int(rng.integers(1000)))
        assert f.min() >= 0 and f.max() < k
        for c in np.unique(labels):
            n = np.bincount(f[labels == c], minlength=k)
            assert n.max() - n.min() <= 1
        n = np.bincount(f, minlength=k)
        assert n.max() - n.min() <= 1


@pytest.mark.parametrize("bad", [1, -2, 53, "2", True, 2.0])
def test_bad_cv_folds_is_a_one_line_user_error(bad, tmp_path):
    cfg = _config()
    cfg.study.cv_folds = bad if not isinstance(bad, (str, float)) else 0
    if isinstance(bad, (str, float)):  # the CLI would refuse the type; a config file may not
        with cfg.ignore_type():
            cfg.study.cv_folds = bad
    with pytest.raises(UserError, match=r"^study\.cv_folds=") as e:
        num_folds(cfg)
    assert "\n" not in str(e.value)
    if bad in (1, 53):  # through `jaxsynth run`, before anything runs
        with pytest.raises(UserError, match=r"^study\.cv_folds="):
            run_study(cfg, tmp_path)
        assert not (tmp_path / "fold_0").exists()
    assert num_folds(_config("--config.study.cv_folds=52")) == 52  # the smoke pool: 52 tumour


def test_the_ratio_sweep_refuses_cv_folds(tmp_path):
    from jaxsynth.study.sweep import run_sweep

    cfg = load_config("ratio_sweep:smoke", OVERRIDES + ["--config.study.cv_folds=2"])
    with pytest.raises(UserError, match=r"^study\.cv_folds: the ratio sweep"):
        run_sweep(cfg, tmp_path)


# --- stage keys and the leakage guard ------------------------------------------------------


def _keys(stages, cfg) -> dict[str, str]:
    keys: dict[str, str] = {}
    d = config_to_dict(cfg)
    for s in stages:
        keys[s.name] = stage_key(s, d, keys)
    return keys


def test_every_stage_key_differs_per_fold_and_from_the_single_split():
    cfg = _config("--config.study.cv_folds=2")
    stages = build_stages(cfg)
    single = _keys(stages, cfg)
    f0, f1 = (_keys(fold_stages(stages, f), cfg) for f in (0, 1))
    assert list(f0) == list(f1) == list(single)  # same pipeline per fold
    for name in single:
        assert len({single[name], f0[name], f1[name]}) == 3, name
    split = fold_stages(stages, 0)[0]
    assert split.name == "split" and set(DATA_KEYS) <= set(split.config_keys)


def test_cv_folds_zero_keeps_every_stage_key_but_the_report():
    """cv_folds=0 is today's study: without the key (the config before it existed) every
    stage key is the same except the report's, which hashes the whole config."""
    cfg = _config()
    old = _config()
    with old.unlocked():
        del old.study["cv_folds"]
    new_keys, old_keys = _keys(build_stages(cfg), cfg), _keys(build_stages(old), old)
    assert list(new_keys) == list(old_keys)
    differ = [n for n in new_keys if new_keys[n] != old_keys[n]]
    whole = [s.name for s in build_stages(cfg) if ALL_KEYS in s.config_keys]
    assert differ == whole == ["report"]


def test_leakage_guard_runs_per_fold_on_a_planted_test_tile(tmp_path, monkeypatch):
    build = folds_lib.build_cv_split

    def buggy(config, fold):
        # fold 1's split with one of its test tumour tiles planted into its training part
        split = build(config, fold)
        tumour = split.label_of("tumour")
        i_test = int(np.flatnonzero(split.test.labels == tumour)[0])
        i_train = int(np.flatnonzero(split.train.labels == tumour)[0])
        split.train.images[i_train] = split.test.images[i_test]
        split.train.hashes[i_train] = split.test.hashes[i_test]
        split.manifest["splits"]["train"][i_train]["sha256"] = split.test.hashes[i_test]
        return split

    monkeypatch.setattr(folds_lib, "build_cv_split", buggy)
    cfg = _config("--config.study.cv_folds=2")
    stages = [s for s in fold_stages(build_stages(cfg), 1) if s.name in ("split", "gen_dcgan_g0")]
    with pytest.raises(LeakageError, match="generator 'dcgan'"):
        StageRunner(tmp_path, cfg).run(stages)


def test_each_folds_guard_holds_its_own_test_and_validation_tiles():
    """The selective filter's thresholds and a generator's training data are checked against
    the fold's own test/validation tiles; a tile that is fold 1's test tile is a legitimate
    training tile of fold 2."""
    from jaxsynth.data.split import assert_no_leakage
    from jaxsynth.study import selective

    src = ToySource(n_normal=60, n_tumour=20)
    f1, f2 = (
        folds_lib.build_fold_split(src, seed=0, image_size=8, counts=COUNTS, num_folds=3, fold=f)
        for f in (1, 2)
    )
    tumour = f1.label_of("tumour")
    in_f2_train = np.isin(f1.test.hashes, f2.train.hashes) & (f1.test.labels == tumour)
    tile = f1.test.images[np.flatnonzero(in_f2_train)[:1]]
    assert len(tile) == 1
    val_t, train_t = (f1.split(n).of_classes([tumour]).images for n in ("val", "train"))
    args = (
        lambda x: x.mean((1, 2, 3)) / 255.0,
        lambda x: x.reshape(len(x), -1)[:, :4].astype(np.float64),
        f1.manifest,
        0.1,
        0.9,
    )
    selective.select_synthetic(train_t[:3], val_t, train_t, *args)  # clean: runs
    with pytest.raises(LeakageError, match="threshold tiles"):
        selective.select_synthetic(train_t[:3], np.concatenate([val_t, tile]), train_t, *args)
    with pytest.raises(LeakageError, match="generator"):
        assert_no_leakage(f1, np.concatenate([train_t, tile]), "generator 'g'")
    assert_no_leakage(f2, np.concatenate([f2.train.images, tile]), "generator 'g'")


# --- pooled statistics ---------------------------------------------------------------------


def _fake_runs(rng, n, arms=("original", "dcgan", "dcgan_classical"), shift=0.0):
    y = (rng.random(n) < 0.25).astype(int)
    runs = {}
    for a, arm in enumerate(arms):
        gseeds = [None] if arm == "original" else [0, 1]
        runs[arm] = [
            {
                "generator_seed": g,
                "seed": s,
                "test_probs": np.clip(0.35 * y + rng.random(n) * 0.7 + shift * a, 0, 1),
                "threshold": float(rng.uniform(0.3, 0.6)),
            }
            for g in gseeds
            for s in (0, 1)
        ]
    return y, runs


def test_pooled_statistics_with_one_fold_equal_hierarchical_arms():
    y, runs = _fake_runs(np.random.default_rng(1), 60)
    want = verdicts.hierarchical_arms(runs, y, n_boot=200, seed=5)
    got = cv_report.pooled_arms(runs, y, y, n_boot=200, seed=5, primary="pr_auc")
    for arm in runs:
        for m in ("f1", "pr_auc", "roc_auc", "brier", "sens_at_spec95"):
            a, b = got[arm]["metrics"][m], want[arm]["metrics"][m]
            assert a["mean"] == pytest.approx(b["mean"], abs=1e-12)
            assert a["ci95"] == pytest.approx(b["ci95"], abs=1e-12)
        for ref, comp in want[arm]["vs"].items():
            for m in ("f1", "pr_auc"):
                assert got[arm]["vs"][ref][m]["ci95"] == pytest.approx(comp[m]["ci95"], abs=1e-12)
                assert got[arm]["vs"][ref][m]["verdict"] == comp[m]["verdict"]
        assert got[arm]["verdict"] == want[arm]["verdict"]


def test_pooled_runs_use_each_folds_threshold_and_resample_within_folds():
    from sklearn.metrics import average_precision_score, f1_score

    rng = np.random.default_rng(2)
    parts = [_fake_runs(rng, n) for n in (40, 37)]
    folds = [{"fold": f, "runs": r, "skipped_arms": {}} for f, (_, r) in enumerate(parts)]
    runs, missing = cv_report.pooled_runs(folds)
    assert missing == [] and set(runs) == {"original", "dcgan", "dcgan_classical"}
    y = np.concatenate([p[0] for p in parts])
    strata = np.concatenate([f * 1000 + p[0] for f, p in enumerate(parts)])
    res = cv_report.pooled_arms(runs, y, strata, n_boot=100, seed=0, primary="pr_auc")
    # the point estimate: mean over runs of the metric on the pooled predictions
    f1s, aps = [], []
    for g, s in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        pred, prob = [], []
        for _, r in parts:
            (run,) = [x for x in r["dcgan"] if (x["generator_seed"], x["seed"]) == (g, s)]
            pred.append(run["test_probs"] >= run["threshold"])
            prob.append(run["test_probs"])
        f1s.append(f1_score(y, np.concatenate(pred)))
        aps.append(average_precision_score(y, np.concatenate(prob)))
    assert res["dcgan"]["metrics"]["f1"]["mean"] == pytest.approx(np.mean(f1s))
    assert res["dcgan"]["metrics"]["pr_auc"]["mean"] == pytest.approx(np.mean(aps))
    # every test resample keeps each fold's class counts
    from jaxsynth.eval.classification import resample_indices

    idx = resample_indices(strata, 20, 0)
    for b in idx:
        assert np.array_equal(np.bincount(strata[b]), np.bincount(strata))
    # an arm one fold lacks has no pooled row
    folds[1]["runs"] = {a: r for a, r in folds[1]["runs"].items() if a != "dcgan_classical"}
    folds[1]["skipped_arms"] = {"dcgan_classical": "why"}
    runs, missing = cv_report.pooled_runs(folds)
    assert missing == ["dcgan_classical"] and "dcgan_classical" not in runs


def test_t_test_across_folds_is_scipys_paired_test():
    from scipy import stats

    a, b = [0.61, 0.70, 0.66, 0.58, 0.72], [0.60, 0.64, 0.67, 0.50, 0.69]
    fold_h = [
        {"x": {"metrics": {"f1": {"mean": u}}}, "o": {"metrics": {"f1": {"mean": v}}}}
        for u, v in zip(a, b)
    ]
    t = cv_report.across_folds_t_test(fold_h, "x", "o", "f1")
    want = stats.ttest_rel(a, b)
    assert (
        t["n"] == 5
        and t["p"] == pytest.approx(want.pvalue)
        and t["t"] == pytest.approx(want.statistic)
    )


# --- end to end ----------------------------------------------------------------------------


def test_cv_folds_zero_gives_the_single_split_study_byte_for_byte(tmp_path):
    """A study without generators (split + original arms + report) with cv_folds=0, then the
    report rebuilt from the config as it was before `study.cv_folds` existed: report.md and
    results.csv are byte-identical, results.json differs only by the recorded key."""
    cfg = _config("--config.generators=()", "--config.classifier.seeds=(0,)")
    run_study(cfg, tmp_path)
    assert not (tmp_path / "fold_0").exists()
    files = {f: (tmp_path / f).read_bytes() for f in ("report.md", "results.csv", "results.json")}
    old = _config("--config.generators=()", "--config.classifier.seeds=(0,)")
    with old.unlocked():
        del old.study["cv_folds"]
    runner = StageRunner(tmp_path, old)
    runner.run(build_stages(old))
    assert runner.ran == ["report"]
    for f in ("report.md", "results.csv"):
        assert (tmp_path / f).read_bytes() == files[f], f
    new, was = (
        json.loads(files["results.json"]),
        json.loads((tmp_path / "results.json").read_text()),
    )
    assert new["config"]["study"].pop("cv_folds") == 0
    for part in (new, was):  # the host's state, not the study's
        part["environment"].pop("devices", None)
    assert new == was


@pytest.fixture(scope="module")
def cv_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cv")
    cfg = _config("--config.study.cv_folds=2", "--config.study.generator_seeds=(0,)")
    results = run_study(cfg, workdir)
    return workdir, cfg, results


@pytest.mark.slow
def test_two_fold_smoke_study_end_to_end(cv_study):
    from sklearn.metrics import f1_score

    workdir, cfg, _ = cv_study
    res = json.loads((workdir / "results.json").read_text())
    cv = res["cv"]
    assert cv["num_folds"] == 2 and cv["pool"] == {"normal": 210, "tumour": 52}
    assert cv["test_tiles"] == 262
    splits = [
        load_split(next((workdir / f"fold_{f}" / "stages").glob("split-*")) / "split")
        for f in (0, 1)
    ]
    t0, t1 = (set(s.test.ids) for s in splits)
    assert not t0 & t1 and len(t0 | t1) == 262
    for s in splits:  # no test tile of a fold in that fold's generator's training images
        assert not set(s.test.hashes) & set(s.train.hashes)
    gen_dirs = [
        next((workdir / f"fold_{f}" / "stages").glob("gen_dcgan_g0-*")).name for f in (0, 1)
    ]
    assert gen_dirs[0] != gen_dirs[1]
    # per-fold and pooled rows for the generator arm vs original and vs its control
    h = res["hierarchical"]
    assert set(res["verdicts"]) == set(h) and "original" in h and "dcgan" in h
    arms = {"original", "dcgan", "dcgan_synthetic_only", "dcgan_selective", "dcgan_classical"}
    assert set(h) | set(cv["missing_arms"]) == arms | {"dcgan_oversample"}
    for ref in ("original", "dcgan_classical"):
        row = cv["per_fold"]["dcgan"][ref]["pr_auc"]
        assert len(row["folds"]) == 2 and row["t_test_folds"]["n"] == 2
        assert h["dcgan"]["vs"][ref]["pr_auc"]["verdict"] in ("better", "no evidence", "worse")
    # the pooled point F1 of the original arm: every tile at its own fold's threshold
    f1s = []
    for seed in cfg.classifier.seeds:
        pred = []
        for f in (0, 1):
            d = next((workdir / f"fold_{f}" / "stages").glob(f"arm_original_s{seed}-*"))
            r = json.loads((d / "result.json").read_text())
            pred.append(np.asarray(r["test_probs"]) >= r["threshold"])
        y = np.concatenate([s.test.labels for s in splits])
        f1s.append(f1_score(y, np.concatenate(pred)))
    assert h["original"]["metrics"]["f1"]["mean"] == pytest.approx(np.mean(f1s))
    md = (workdir / "report.md").read_text()
    assert "K-fold CV, K = 2" in md and "fold 1 ΔAUPRC" in md and "t-test across folds" in md
    assert "- dcgan: " in md
    for f in (0, 1):
        assert (workdir / f"fold_{f}" / "report.md").is_file()
    assert (workdir / "environment.json").is_file()
    assert (workdir / "figures" / "forest.png").is_file()
    from jaxsynth.cli import main

    assert main(["compare", str(workdir), str(workdir)]) == 0  # a CV run compares like any run


@pytest.mark.slow
def test_cv_rerun_is_cached(cv_study):
    workdir, cfg, _ = cv_study
    from jaxsynth.study.folds import fold_dir

    run_study(cfg, workdir)
    for f in (0, 1):
        runner = StageRunner(fold_dir(workdir, f), cfg)
        runner.run(fold_stages(build_stages(cfg), f))
        assert runner.ran == []
