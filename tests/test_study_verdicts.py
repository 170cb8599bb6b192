"""The smoke study end to end with generator seeds, controls, verdicts; `jaxsynth compare`."""

import copy
import json

import numpy as np
import pytest

from jaxsynth.cli import main
from jaxsynth.commands.compare import compare_results
from jaxsynth.config import load_config
from jaxsynth.study.rare_tumour import build_stages, run_study

OVERRIDES = ["--config.generators=('dcgan',)"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("verdict_study")
    run_study(load_config("rare_tumour:smoke", OVERRIDES), workdir)
    return workdir, json.loads((workdir / "results.json").read_text())


def test_stages_per_generator_seed():
    cfg = load_config("rare_tumour:smoke", OVERRIDES)
    names = [s.name for s in build_stages(cfg, "/nonexistent")]
    for k in (0, 1):
        for kind in ("gen", "sample", "synth", "arms"):
            assert f"{kind}_dcgan_g{k}" in names
    assert names[-1] == "report"


def test_every_arm_has_runs_per_generator_and_classifier_seed_and_a_verdict(study):
    _, res = study
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
    _, res = study
    counts = {a: res["arms"][a]["counts"] for a in ("dcgan", "dcgan_classical", "dcgan_oversample")}
    assert counts["dcgan_classical"] == counts["dcgan"] == counts["dcgan_oversample"]


def test_report_has_verdicts_and_forest_plot(study):
    workdir, _ = study
    md = (workdir / "report.md").read_text()
    assert "## Verdicts (hierarchical intervals)" in md and "- dcgan: " in md
    assert "## Threshold stability" in md and "## Provenance" in md
    assert (workdir / "figures" / "forest.png").is_file()


def test_compare_same_run_agrees_and_a_flipped_verdict_is_reported(study, tmp_path, capsys):
    workdir, res = study
    assert main(["compare", str(workdir), str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "0 of" in out and "verdicts differ" in out
    other = copy.deepcopy(res)
    d = other["hierarchical"]["dcgan"]["vs"]["original"]["pr_auc"]
    d["verdict"] = "worse" if d["verdict"] != "worse" else "better"
    d["ci95"] = [d["ci95"][1] + 1.0, d["ci95"][1] + 2.0]
    other["provenance"]["machine"]["jax_backend"] = "gpu"
    (tmp_path / "results.json").write_text(json.dumps(other))
    rows = compare_results(res, other)
    bad = [r for r in rows["rows"] if not r["same_verdict"]]
    assert [(r["arm"], r["vs"], r["metric"]) for r in bad] == [("dcgan", "original", "pr_auc")]
    assert not bad[0]["overlap"]
    assert rows["provenance_changes"]["machine.jax_backend"][1] == "gpu"
    assert main(["compare", str(workdir), str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS" in out and "1 of" in out and "jax_backend" in out
