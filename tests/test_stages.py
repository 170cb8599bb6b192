"""Stage cache: finished stages are skipped, a config change reruns only its dependants."""

import ml_collections
import pytest

from jaxsynth.study.stages import Stage, StageRunner


def _config(**kw):
    c = ml_collections.ConfigDict({"seed": 0, "a": {"x": 1}, "b": {"y": 2}})
    for k, v in kw.items():
        c[k.split("__")[0]][k.split("__")[1]] = v
    return c


def _stages(calls):
    def make(name):
        def fn(ctx):
            calls.append(name)
            (ctx.dir / "out.txt").write_text(name)
            deps = {d: ctx.input(d)["value"] for d in ctx.stage.inputs}
            return {"value": f"{name}({','.join(f'{k}={v}' for k, v in deps.items())})"}

        return fn

    return [
        Stage("split", make("split"), config_keys=("seed",)),
        Stage("gen_a", make("gen_a"), config_keys=("a.x",), inputs=("split",)),
        Stage("gen_b", make("gen_b"), config_keys=("b.y",), inputs=("split",)),
        Stage("report", make("report"), inputs=("gen_a", "gen_b")),
    ]


def test_second_run_is_fully_cached(tmp_path):
    calls = []
    r1 = StageRunner(tmp_path, _config()).run(_stages(calls))
    assert calls == ["split", "gen_a", "gen_b", "report"]
    calls.clear()
    r2 = StageRunner(tmp_path, _config()).run(_stages(calls))
    assert calls == []
    assert r1["report"]["value"] == r2["report"]["value"]


def test_config_change_reruns_only_dependants(tmp_path):
    calls = []
    StageRunner(tmp_path, _config()).run(_stages(calls))
    calls.clear()
    runner = StageRunner(tmp_path, _config(b__y=3))
    runner.run(_stages(calls))
    assert calls == ["gen_b", "report"]
    assert runner.skipped == ["split", "gen_a"]
    calls.clear()
    StageRunner(tmp_path, _config()).run(_stages(calls))
    assert calls == []  # the original outputs are still there


def test_killed_stage_resumes_with_its_partial_dir(tmp_path):
    calls = []
    stages = _stages(calls)

    def crash(ctx):
        (ctx.dir / "checkpoint").write_text("step 5")
        raise KeyboardInterrupt

    stages[2] = Stage("gen_b", crash, config_keys=("b.y",), inputs=("split",))
    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path, _config()).run(stages)
    assert calls == ["split", "gen_a"]

    seen = []

    def resume(ctx):
        seen.append((ctx.dir / "checkpoint").read_text())
        return {"value": "b"}

    stages = _stages(calls)
    stages[2] = Stage("gen_b", resume, config_keys=("b.y",), inputs=("split",))
    calls.clear()
    StageRunner(tmp_path, _config()).run(stages)
    assert calls == ["report"] and seen == ["step 5"]
    assert not list((tmp_path / "stages").glob("*.partial"))
