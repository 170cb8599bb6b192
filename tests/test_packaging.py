"""Configs that ship with the package, the variant parser, nested study overrides, --version,
and (slow tier) a wheel installed non-editable into a fresh venv running the main commands from
a directory that is not the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from jaxsynth.cli import main
from jaxsynth.config import Variants, config_to_dict, load_config, named_configs
from jaxsynth.errors import UserError
from jaxsynth.study.generators import generator_config

REPO = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_package_on_disk():
    """The explicit package list (needed for the configs mapping) misses no subpackage."""
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "jaxsynth").rglob("__init__.py")
    } | {"jaxsynth.configs"}
    assert listed == on_disk


def test_named_configs_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert load_config("dcgan:smoke").image_size == 16
    # a path into the repository's configs/ that is not a file here is the shipped config
    assert load_config("configs/ddpm.py:smoke,class").ddpm.conditioning == "class"
    # a user's own file wins, by path or by bare name
    (tmp_path / "mine.py").write_text(
        "from jaxsynth.configs import dcgan\n\n"
        "def get_config(arg=None):\n    c = dcgan.get_config('smoke')\n    c.num_steps = 7\n"
        "    return c\n"
    )
    assert load_config("mine").num_steps == 7 and load_config("mine.py").num_steps == 7
    with pytest.raises(UserError, match="config file not found: nope.*named configs: .*dcgan"):
        load_config("nope")


def test_every_named_config_loads_each_preset():
    configs = named_configs()
    assert {"dcgan", "cgan", "wgan_gp", "ddpm", "rare_tumour", "ratio_sweep"} <= set(configs)
    assert not any(name.startswith("_") for name in configs)  # presets are not configs
    for name, module in configs.items():
        for preset in (None, *module.VARIANTS.presets):
            spec = name if preset is None else f"{name}:{preset}"
            assert load_config(spec).num_steps >= 0, spec


def test_variant_parser_presets_modifiers_and_errors():
    v = Variants(("smoke", "paper"), modifiers=("class", "label=<class>", "i<N>"))
    assert v.parse(None) == (None, [])
    assert v.parse("smoke,class,label=normal") == ("smoke", ["class", "label=normal"])
    assert v.parse("i7") == (None, ["i7"])
    for bad in ("huge", "smoke,paper", "label=", "j7"):
        with pytest.raises(ValueError, match="unknown variant"):
            v.parse(bad)
    with pytest.raises(UserError, match="unknown variant 'huge' .smoke . paper . phantom64"):
        load_config("dcgan:huge")


def test_nested_generator_key_overrides_one_key_and_keeps_the_others():
    default = load_config("rare_tumour")
    changed = load_config(
        "rare_tumour", ["--config.gen.dcgan.optim.g_lr=1e-4", "--config.gen.ddpm.sampler.steps=7"]
    )
    assert changed.gen.dcgan.optim.g_lr == 1e-4 and isinstance(changed.gen.dcgan.optim.g_lr, float)
    assert changed.gen.ddpm.sampler.steps == 7
    a, b = config_to_dict(default), config_to_dict(changed)
    b["gen"]["dcgan"]["optim"]["g_lr"] = a["gen"]["dcgan"]["optim"]["g_lr"]
    b["gen"]["ddpm"]["sampler"]["steps"] = a["gen"]["ddpm"]["sampler"]["steps"]
    assert a == b  # nothing else moved (DiffAugment, widths, ... kept)
    dcgan = generator_config(changed, "dcgan")
    assert dcgan.optim.g_lr == 1e-4 and dcgan.gan.diffaugment == "color,translation,cutout"
    assert dcgan.image_size == changed.image_size and dcgan.data.source == "phantom"
    with pytest.raises(UserError, match="expected a number"):
        load_config("rare_tumour", ["--config.gen.dcgan.optim.g_lr=fast"])
    with pytest.raises(UserError, match="unknown config key 'gen.dcgan.image_size'"):
        load_config("rare_tumour", ["--config.gen.dcgan.image_size=64"])  # the study's key


def test_configs_command_lists_and_show_round_trips(tmp_path, capsys):
    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    assert "ddpm\n    variants: smoke | paper | phantom | study32; then none" in listing
    assert main(["configs", "show", "rare_tumour:smoke", "--config.gen.dcgan.num_steps=9"]) == 0
    copy = tmp_path / "copy.py"
    copy.write_text(capsys.readouterr().out)
    expected = config_to_dict(load_config("rare_tumour:smoke", ["--config.gen.dcgan.num_steps=9"]))
    assert config_to_dict(load_config(str(copy))) == expected


def test_version_flag_names_package_and_libraries(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    import jax

    assert out.startswith("jaxsynth 0.") and f"jax {jax.__version__}" in out and "backend" in out


@pytest.mark.slow
def test_wheel_in_fresh_venv_runs_main_commands_outside_the_checkout(tmp_path):
    """What a cluster user does: build a wheel, install it (non-editable) into a new venv, and run
    the smoke study and a smoke training from an empty directory."""
    dist = tmp_path / "dist"
    run = lambda cmd, **kw: subprocess.run(  # noqa: E731
        cmd, check=True, capture_output=True, text=True, timeout=1200, **kw
    )
    # a copy of the sources: setuptools builds in-tree (build/), which must not touch the checkout
    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "runs", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)])
    (wheel,) = dist.glob("jaxsynth-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)])
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    exe = str(venv / "bin" / "jaxsynth")
    version = run([exe, "--version"], cwd=work, env=env).stdout
    assert version.startswith("jaxsynth ")
    where = run(
        [str(venv / "bin" / "python"), "-c", "import jaxsynth.configs as c; print(c.__file__)"],
        cwd=work,
        env=env,
    ).stdout
    assert str(venv) in where  # the installed copy, not the checkout
    run([exe, "run", "--config", "rare_tumour:smoke", "--workdir", "w"], cwd=work, env=env)
    assert (work / "w" / "report.md").is_file()
    results = json.loads((work / "w" / "results.json").read_text())
    assert results["environment"]["jaxsynth"] == version.split()[1]
    run([exe, "train", "--config", "dcgan:smoke", "--workdir", "t"], cwd=work, env=env)
    assert (work / "t" / "checkpoints").is_dir() and (work / "t" / "environment.json").is_file()


@pytest.mark.parametrize(
    ("missing", "call", "extra"),
    [
        (
            "diffusers",
            lambda tmp: __import__("jaxsynth.sd.pipeline").sd.pipeline.check_model_folder(tmp),
            "sd",
        ),
        ("flask", lambda tmp: main(["reader-study", "serve", str(tmp)]), "reader-study"),
        ("tensorflow_datasets", lambda tmp: load_source(f"tfds:patch_camelyon@{tmp}"), "tfds"),
    ],
)
def test_missing_extra_is_a_one_line_error_naming_it(missing, call, extra, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a)
    )
    try:
        rc = call(tmp_path)
    except UserError as e:
        message = str(e)
    else:  # the CLI printed it
        assert rc == 2
        return
    assert f"pip install 'jaxsynth[{extra}]'" in message and "\n" not in message


def load_source(spec: str):
    from jaxsynth.data.sources import open_source

    return open_source(spec)
