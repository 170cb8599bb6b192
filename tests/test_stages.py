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


def test_a_stage_sees_only_the_config_keys_it_declares(tmp_path):
    from jaxsynth.study.stages import UndeclaredRead

    seen = {}

    def reads_declared(ctx):
        seen["x"] = ctx.config.a.x
        seen["has_b"] = "b" in ctx.config
        return {}

    StageRunner(tmp_path, _config()).run([Stage("ok", reads_declared, config_keys=("a.x",))])
    assert seen == {"x": 1, "has_b": False}

    def reads_undeclared(ctx):
        return {"y": ctx.config.b.y}  # b.y changes nothing in this stage's cache key

    with pytest.raises(
        UndeclaredRead, match=r"stage bad reads config key b, which is not among .*a\.x"
    ):
        StageRunner(tmp_path, _config()).run([Stage("bad", reads_undeclared, config_keys=("a.x",))])


def test_a_stage_reads_only_its_declared_inputs(tmp_path):
    from jaxsynth.study.stages import UndeclaredRead

    stages = [
        Stage("one", lambda ctx: {"v": 1}),
        Stage("two", lambda ctx: {"v": ctx.input("one")["v"]}),  # "one" not declared
    ]
    with pytest.raises(UndeclaredRead, match="stage two reads the output of one"):
        StageRunner(tmp_path, _config()).run(stages)


def test_outputs_are_loaded_once_per_run_and_kept_outputs_not_at_all(tmp_path):
    loads = []

    def loader(directory):
        loads.append(directory.name)
        return (directory / "data.txt").read_text()

    def make(ctx):
        (ctx.dir / "data.txt").write_text("payload")
        return {}

    def use(ctx):
        return {"got": ctx.load("make", loader)}

    def stages(keep):
        def make_and_keep(ctx):
            make(ctx)
            ctx.keep(loader, "payload")
            return {}

        return [
            Stage("make", make_and_keep if keep else make),
            Stage("use1", use, inputs=("make",)),
            Stage("use2", use, inputs=("make",)),
        ]

    results = StageRunner(tmp_path / "a", _config()).run(stages(keep=True))
    assert results["use2"]["got"] == "payload" and loads == []  # handed over in memory
    results = StageRunner(tmp_path / "b", _config()).run(stages(keep=False))
    assert results["use2"]["got"] == "payload" and len(loads) == 1  # read once, shared
    assert loads[0].startswith("make-")  # from the finished directory, not the .partial one


def test_a_key_error_of_the_stage_itself_is_not_blamed_on_the_config(tmp_path):
    def fails(ctx):
        return {"x": {"y": 1}["x"]}  # "x" is also a declared config key (a.x): not the cause

    with pytest.raises(KeyError):
        StageRunner(tmp_path, _config()).run([Stage("s", fails, config_keys=("a.x",))])
