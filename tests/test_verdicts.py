"""Verdicts from hierarchical Δ intervals: planted effect, planted null, forest plot."""

import numpy as np
import pytest

from jaxsynth.eval import hierarchical as hb
from jaxsynth.study import forest, verdicts

N_POS, N_NEG = 60, 600


def _runs(rng, signal, gen_seeds=(None,), cls_seeds=(0, 1, 2), gen_sd=0.0):
    """Runs whose tumour scores separate the classes by `signal` (per generator seed shifted by
    N(0, gen_sd): a generator-level effect)."""
    y = np.r_[np.ones(N_POS), np.zeros(N_NEG)]
    out = []
    for g in gen_seeds:
        sig_g = signal + rng.normal(0, gen_sd)
        for s in cls_seeds:
            logit = sig_g * (2 * y - 1) + rng.normal(0, 1.0, len(y)) - 1.0
            out.append(
                {
                    "test_probs": 1 / (1 + np.exp(-logit)),
                    "threshold": 0.5,
                    "seed": s,
                    "generator_seed": g,
                }
            )
    return out


@pytest.fixture(scope="module")
def judged():
    rng = np.random.default_rng(0)
    runs = {
        "original": _runs(rng, 1.0),
        "clear": _runs(rng, 2.0, gen_seeds=(0, 1, 2), gen_sd=0.05),
        "null": _runs(rng, 1.0, gen_seeds=(0, 1, 2), gen_sd=0.05),
        "null_classical": _runs(rng, 1.0, gen_seeds=(0, 1, 2)),
    }
    labels = np.r_[np.ones(N_POS, int), np.zeros(N_NEG, int)]
    return verdicts.hierarchical_arms(runs, labels, n_boot=300, seed=0, primary="pr_auc")


def test_planted_effect_is_better_and_planted_null_is_no_evidence(judged):
    for m in ("pr_auc", "roc_auc", "f1", "sens_at_spec90", "brier"):
        assert judged["clear"]["vs"]["original"][m]["verdict"] == "better", m
        assert judged["null"]["vs"]["original"][m]["verdict"] == "no evidence", m
    assert judged["clear"]["verdict"].startswith("clear: better than original (ΔAUPRC +")
    # the Brier score falls for the better arm: lower is better, still judged "better"
    assert judged["clear"]["vs"]["original"]["brier"]["mean"] < 0
    # a generator arm is also judged against its matched classical control
    assert set(judged["null"]["vs"]) == {"original", "null_classical"}
    assert set(judged["null_classical"]["vs"]) == {"original"}
    assert judged["original"]["vs"] == {}
    assert judged["clear"]["runs"][:4] == [[0, 0], [0, 1], [0, 2], [1, 0]]


def test_variance_split_is_reported_per_arm(judged):
    v = judged["clear"]["metrics"]["pr_auc"]["variance"]
    assert v["generator_seeds"] == 3 and v["classifier_seeds_per_generator"] == [3, 3, 3]
    assert all(np.isfinite(x) and x >= 0 for x in v["contribution"].values())
    assert judged["original"]["metrics"]["pr_auc"]["variance"]["components"]["generator"] == 0.0


def test_verdict_rule():
    assert hb.verdict({"ci95": [0.01, 0.2]}) == "better"
    assert hb.verdict({"ci95": [-0.2, -0.01]}) == "worse"
    assert hb.verdict({"ci95": [-0.01, 0.2]}) == "no evidence"
    assert hb.verdict({"ci95": [-0.2, -0.01]}, higher_is_better=False) == "better"


def test_references():
    arms = ["original", "ddpm", "ddpm_selective", "ddpm_classical", "ddpm_oversample"]
    assert verdicts.references("ddpm_selective", arms) == ["original", "ddpm_classical"]
    assert verdicts.references("ddpm_oversample", arms) == ["original"]
    assert verdicts.references("original", arms) == []


def test_forest_plot_and_markdown(judged, tmp_path):
    rows = forest.forest_plot(judged, tmp_path / "forest.png")
    assert rows == ["clear", "null", "null_classical"]
    from PIL import Image

    assert Image.open(tmp_path / "forest.png").size[0] > 300
    md = verdicts.markdown_section(judged, "pr_auc", 300, [0, 1, 2])
    assert "- clear: better than original" in md
    assert "| null | null_classical |" in md
    one = verdicts.markdown_section(judged, "pr_auc", 300, [0])
    assert "not** in these intervals" in one


def test_paired_t_test_pairs_by_classifier_seed_and_matches_scipy(judged):
    """Paper 004's t-test: pairs are classifier seeds, generator seeds averaged within a pair;
    the statistic equals scipy's ttest_rel on those per-seed means, computed here by hand."""
    from scipy import stats

    def pts(seeds_vals):
        return [(s, {"f1": v}) for s, v in seeds_vals]

    arm = pts([(0, 0.70), (0, 0.74), (1, 0.80), (1, 0.78), (2, 0.75), (2, 0.77)])
    ref = pts([(0, 0.70), (1, 0.71), (2, 0.69), (3, 0.9)])  # seed 3 has no partner: dropped
    got = verdicts.paired_t_test(arm, ref, "f1")
    want = stats.ttest_rel([0.72, 0.79, 0.76], [0.70, 0.71, 0.69])
    assert got["n"] == 3
    assert got["t"] == pytest.approx(want.statistic) and got["p"] == pytest.approx(want.pvalue)
    assert verdicts.paired_t_test(arm[:2], ref, "f1") == {"n": 1, "t": None, "p": None}
    # in the judged study: the planted effect is significant by the t-test too, the null is not
    assert judged["clear"]["vs"]["original"]["pr_auc"]["t_test"]["p"] < 0.05
    assert judged["clear"]["vs"]["original"]["pr_auc"]["t_test"]["n"] == 3
    md = verdicts.markdown_section(judged, "pr_auc", 300, [0, 1, 2])
    assert "paired t-test p" in md
