"""Paper 001's GAN grid as a study config: every grid point becomes one study generator."""

from __future__ import annotations

import pytest

from jaxsynth.config import load_config
from jaxsynth.errors import UserError
from jaxsynth.study.generators import generator_config
from jaxsynth.study.rare_tumour import enabled_generators


def _grid_points():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "configs" / "gan_grid.py"
    spec = importlib.util.spec_from_file_location("gan_grid_for_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.grid_points()


def test_every_grid_point_is_a_generator_with_its_hyperparameters():
    study = load_config("gan_grid_study")
    points = _grid_points()
    assert (
        enabled_generators(study)
        == [f"grid_{i:02d}" for i in range(len(points))]
        == list(study.generators)
    )
    for i in (0, 7, 71):
        cfg = generator_config(study, f"grid_{i:02d}")
        for key, value in points[i].items():
            group, name = key.split(".")
            assert cfg[group][name] == value, (i, key)
        # the study's data, size and CPU-sized widths win over the grid file's defaults
        assert cfg.image_size == study.image_size and cfg.model.g_max_width == 128
        assert cfg.data.source == study.data.source and cfg.task == "dcgan"


def test_smoke_variant_picks_two_points_and_unknown_points_are_named():
    study = load_config("gan_grid_study:smoke")
    assert list(study.generators) == ["grid_00", "grid_01"]
    assert generator_config(study, "grid_01").num_steps == study.gen.grid_01.num_steps
    study.generators = ("grid_99",)
    with pytest.raises(UserError, match="grid_99"):
        enabled_generators(study)


def test_default_study_trains_two_gans_and_the_ddpm_and_all_adds_wgan_gp():
    default, everything = load_config("rare_tumour"), load_config("rare_tumour:all")
    assert enabled_generators(default) == ["dcgan", "cgan", "ddpm"]
    assert enabled_generators(everything) == ["dcgan", "cgan", "wgan_gp", "ddpm"]
    # the DCGAN of the default sees only 80 tumour tiles: DiffAugment is on
    dcgan = generator_config(default, "dcgan")
    assert dcgan.gan.diffaugment == "color,translation,cutout" and dcgan.num_steps == 2000
    # the study's DDPM: one model for the tumour class, v-prediction (configs/ddpm.py)
    ddpm = generator_config(default, "ddpm")
    assert ddpm.ddpm.conditioning == "none" and ddpm.ddpm.label == "tumour"
    assert ddpm.ddpm.prediction == "v" and ddpm.data.train_classes == ("tumour",)
