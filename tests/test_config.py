"""Config loading and `--config.a.b=value` overrides: types enforced, unknown keys named."""

import textwrap

import pytest

from jaxsynth.cli import main
from jaxsynth.config import apply_overrides, base_config, config_hash, load_config
from jaxsynth.errors import UserError


@pytest.fixture
def cfg_file(tmp_path):
    p = tmp_path / "toy.py"
    p.write_text(
        textwrap.dedent(
            """
            from jaxsynth.config import base_config

            def get_config(arg=None):
                c = base_config()
                c.lr = 2e-4
                c.use_ema = True
                c.channels = (16, 32)
                c.model = "dcgan"
                if arg == "smoke":
                    c.num_steps = 3
                elif arg not in (None, "paper"):
                    raise ValueError(f"unknown variant {arg!r}")
                return c
            """
        )
    )
    return p


def test_load_variant_and_overrides(cfg_file):
    c = load_config(f"{cfg_file}:smoke", ["--config.lr=0.5", "--config.data.source=folder:/x"])
    assert c.num_steps == 3
    assert c.lr == 0.5 and isinstance(c.lr, float)
    assert c.data.source == "folder:/x"
    c = load_config(str(cfg_file), ["--config.use_ema=false", "--config.channels=(8,8,4)"])
    assert c.use_ema is False
    assert tuple(c.channels) == (8, 8, 4)
    assert c.num_steps == base_config().num_steps


def test_int_override_parses_and_rejects(cfg_file):
    c = load_config(str(cfg_file), ["--config.batch_size=7"])
    assert c.batch_size == 7
    with pytest.raises(UserError, match=r"--config.batch_size=seven: expected an integer"):
        load_config(str(cfg_file), ["--config.batch_size=seven"])


def test_unknown_key_is_named(cfg_file):
    with pytest.raises(UserError, match=r"unknown config key 'data.sourse'"):
        load_config(str(cfg_file), ["--config.data.sourse=phantom"])
    with pytest.raises(UserError, match=r"unknown config key 'nope'"):
        load_config(str(cfg_file), ["--config.nope.x=1"])


def test_bad_bool_and_bad_variant(cfg_file):
    with pytest.raises(UserError, match="expected a boolean"):
        apply_overrides(load_config(str(cfg_file)), ["use_ema=maybe"])
    with pytest.raises(UserError, match="unknown variant"):
        load_config(f"{cfg_file}:huge")


def test_missing_config_file():
    with pytest.raises(UserError, match="config file not found"):
        load_config("/nonexistent/thing.py")


def test_hash_changes_with_values(cfg_file):
    a = load_config(str(cfg_file))
    b = load_config(str(cfg_file), ["--config.lr=0.1"])
    assert config_hash(a) == config_hash(load_config(str(cfg_file)))
    assert config_hash(a) != config_hash(b)
    assert config_hash(a, keys=["data"]) == config_hash(b, keys=["data"])


def test_cli_rejects_overrides_for_commands_without_config(capsys):
    with pytest.raises(SystemExit):
        main(["data", "inspect", "--source", "phantom", "--config.seed=1"])
    assert "takes no --config" in capsys.readouterr().err
