"""Paper-reproduction experiment configs compose, and name methods, protocols and metrics that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from srbench.cli import conf_dir
from srbench.metrics import metric_specs
from srbench.registry import get_method_class

EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))


def _compose(name: str, *over: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=[f"experiment={name}", *over], return_hydra_config=True)


def test_there_are_experiments_for_every_diffusion_method() -> None:
    methods = {_compose(e).method.name for e in EXPERIMENTS}
    assert methods >= {"invsr", "stablesr", "dossr", "dmsr"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_is_consistent(name: str) -> None:
    cfg = _compose(name)
    method_cls = get_method_class(cfg.method.name)
    sweep = dict(cfg.hydra.sweeper.params or {})
    steps = [int(s) for s in str(sweep.get("steps", cfg.steps)).split(",")]
    probe = method_cls(  # every key of the method's config is a constructor option (tiny: the registry's)
        **{
            k: v
            for k, v in OmegaConf.to_container(cfg.method, resolve=True).items()
            if k not in ("name", "tiny")
        }
    )
    for s in steps:
        probe.check_steps(s)  # raises UnsupportedSteps
    assert set(cfg.metrics.names) <= set(metric_specs())
    assert (conf_dir() / "protocol" / f"{cfg.protocol.name}.yaml").is_file()
    for ds in str(sweep.get("dataset", cfg.dataset.name)).split(","):
        assert (conf_dir() / "dataset" / f"{ds}.yaml").is_file(), ds
    body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    assert OmegaConf.to_container(body, resolve=True)["run_name"].startswith(cfg.method.name)


def test_paper_settings_are_the_papers() -> None:
    stablesr = _compose("stablesr_table1")
    assert (stablesr.steps, stablesr.method.w, stablesr.method.color_fix) == (200, 0.5, "adain")
    assert stablesr.protocol.lr_centre_crop == 128
    dossr = _compose("dossr_table1")
    assert (dossr.steps, dossr.method.order) == (5, 3)
    invsr = _compose("invsr_table2")
    assert (invsr.steps, invsr.method.color_fix, invsr.protocol.name) == (1, "wavelet", "invsr_paper")
    assert "psnr-rgb" in _compose("dmsr_table1").metrics.names  # DM-SR reports RGB PSNR
    assert Path(conf_dir()).is_dir()


def test_dmsr_experiments_run_the_reference_rows_datasets() -> None:
    from srbench.reference.compare import load_reference

    refs = [r for r in load_reference() if r.paper.startswith("DM-SR") and r.protocol == "dmsr_paper"]
    t1 = _compose("dmsr_table1")
    swept = set(str(t1.hydra.sweeper.params["dataset"]).split(","))
    assert swept == {r.dataset for r in refs if r.table == "Tab. 1"}  # realsr_crop128, not full realsr
    assert t1.dataset.name in swept
    t3 = _compose("dmsr_table3")
    timesteps = {int(t) for t in str(t3.hydra.sweeper.params["method.timestep"]).split(",")}
    rows = {r.setting for r in refs if r.table == "Tab. 3"}
    assert {f"timestep={t}" for t in timesteps} == rows and 500 in timesteps
    assert t3.dataset.name == "realset80" and {r.dataset for r in refs if r.table == "Tab. 3"} == {
        "realset80"
    }


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("local_workers", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ],
)
def test_launcher_configs_compose(launcher: str, target: str) -> None:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.tasks_per_node == 1
