"""A cell's directory derives from its identity: defaults keep a short path, every key that changes the
numbers gets its own directory, settings that change nothing measured do not."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from srbench.cli import conf_dir
from srbench.identity import cell_config, cell_relpath, outputs_identity, scoring_identity, variant_options


def _plain(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return cell_config(compose("config", overrides=list(overrides)))


def test_the_default_config_keeps_a_readable_path() -> None:
    assert cell_relpath(_plain()) == Path("demo/full/realesrgan/steps1")
    assert cell_relpath(_plain("method=bicubic")) == Path("demo/full/bicubic/steps1")
    assert cell_relpath(_plain("seed=3")) == Path("demo/full/realesrgan/steps1-seed3")
    assert variant_options(_plain()) == {}


SWEPT = [
    "seed=1",
    "method.tile=32",
    "method.tile_pad=16",
    "dtype=fp32",
    "lr_tile=64",
    "protocol.crop_border=4",
    "dataset.limit=3",
    "dataset.root=/elsewhere",
    "speed.attention=math",
    "speed.channels_last=true",
    "warmup=0",
    "run_name=realesrgan-b",
    "+method.extra_option=1",
]


def test_every_key_that_changes_a_cell_gets_its_own_directory() -> None:
    paths = [cell_relpath(_plain())] + [cell_relpath(_plain(o)) for o in SWEPT]
    assert len(set(paths)) == len(paths), paths
    # the same key at two values, too
    assert cell_relpath(_plain("method.tile=32")) != cell_relpath(_plain("method.tile=64"))
    a = ("dataset=paired", "dataset.lr_dir=/a/LR", "dataset.hr_dir=/a/HR")
    b = ("dataset=paired", "dataset.lr_dir=/b/LR", "dataset.hr_dir=/a/HR")
    assert cell_relpath(_plain(*a)) != cell_relpath(_plain(*b))
    # two methods under one label never share a directory
    assert cell_relpath(_plain("run_name=x")) != cell_relpath(_plain("method=bicubic", "run_name=x"))


@pytest.mark.parametrize(
    "override",
    [
        "save_images=false",
        "speed.keep_freed_memory=true",
        "wandb.enabled=true",
        "retry_failed=true",
        "device=cpu",
    ],
)
def test_settings_that_change_nothing_measured_keep_the_directory(override: str) -> None:
    assert cell_relpath(_plain(override)) == cell_relpath(_plain())


def test_the_metric_set_is_a_separate_record() -> None:
    fast, default = _plain("metrics=fast"), _plain()
    assert cell_relpath(fast) == cell_relpath(default)  # the same outputs ...
    assert outputs_identity(fast) == outputs_identity(default)
    assert scoring_identity(fast) != scoring_identity(default)  # ... scored another way
    assert scoring_identity(_plain("metrics.names=[ssim,psnr]")) == scoring_identity(fast)  # order-free
