"""Hydra composition of the real config tree, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from anomalib_lite.data import SpritesDataModule
from anomalib_lite.models import AnomalyModule
from anomalib_lite.models.components import BaselineAE, SpriteAE, UNetAE
from anomalib_lite.utils.instantiate import build


def test_default_config_composes_and_instantiates(compose_cfg):
    cfg = compose_cfg()
    assert cfg.model.net._target_.endswith("SpriteAE")
    assert cfg.data.batch_size == 20 and cfg.trainer.max_epochs == 10
    assert cfg.model.optimizer.lr == pytest.approx(1e-3) and cfg.loss.mse == 1.0
    assert (cfg.data.n_test_normal, cfg.data.n_test_anomalous) == (1001, 1001)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    data = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model, _recursive_=False)
    assert isinstance(data, SpritesDataModule) and isinstance(model, AnomalyModule)
    assert isinstance(model.net, SpriteAE)
    assert model.scorer.primary == cfg.score.primary


def test_overrides_reach_the_objects(compose_cfg):
    cfg = compose_cfg("loss=l1_ssim", "model.optimizer.lr=0.01", "score.primary=l1_mean")
    model = hydra.utils.instantiate(cfg.model, _recursive_=False)
    assert model.loss_fn.weights == {"l1": 1.0, "mse": 0.0, "ssim": 1.0}
    assert model.hparams.optimizer["lr"] == 0.01 and model.scorer.primary == "l1_mean"


def test_negative_size_fails_with_the_key(compose_cfg):
    cfg = compose_cfg("data.n_train=-3")
    with pytest.raises(InstantiationException, match=r"data\.n_train=-3 is invalid"):
        hydra.utils.instantiate(cfg.data)


@pytest.mark.parametrize("net", [
    {"_target_": "os.system", "command": "echo pwned"},
    {"_target_": "anomalib_lite.utils.io.os.system", "command": "echo pwned"},
    {"_target_": "torch.nn.functional.torch.load", "f": "x.pt", "weights_only": False},
    {"_target_": "anomalib_lite.utils.instantiate.instantiate",
     "config": {"_target_": "anomalib_lite.utils.instantiate.OmegaConf.create",
                "obj": "{_target_: os.system, command: echo pwned}"}},
    {"_target_": "torch.nn.functional.relu"},  # a function, not a module class
    {"_target_": "anomalib_lite.models.components.SpriteAE", "_args_": [3]},
    {"_target_": "anomalib_lite.models.components.SpriteAE",
     "hidden": {"_target_": "builtins.eval", "_args_": ["1"]}},
])
def test_disallowed_targets_are_refused_and_never_run(net, capfd):
    with pytest.raises(ValueError, match="not allowed"):
        build(net, "model.net")
    assert "pwned" not in capfd.readouterr().out


def test_allowed_targets_still_build():
    assert isinstance(build({"_target_": "anomalib_lite.models.components.SpriteAE"}, "n"),
                      SpriteAE)
    sched = build({"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau"}, "s",
                  optimizer=torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]))
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)


def test_tampered_checkpoint_config_is_refused_on_load(tmp_path):
    from anomalib_lite.models import AnomalyModule

    model = AnomalyModule(net={"_target_": "anomalib_lite.models.components.SpriteAE"},
                          loss={"_target_": "anomalib_lite.losses.ReconstructionLoss", "mse": 1},
                          optimizer={"_target_": "torch.optim.Adam"})
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": "2.6.0",
                "hyper_parameters": {**model.hparams, "net": {
                    "_target_": "anomalib_lite.utils.io.os.system", "command": "touch pwned"}}},
               path)
    with pytest.raises(ValueError, match="not allowed"):
        AnomalyModule.load_from_checkpoint(path, weights_only=True)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize(("model", "net", "loss", "primary", "clip"), [
    ("sprite_ae", SpriteAE, {"mse": 1.0}, "ssim_s4_top5", None),
    ("baseline", BaselineAE, {"l1": 1.0}, "l1_mean", None),
    ("unet", UNetAE, {"l1": 1.0}, "l1_mean", 1.0),
])
def test_model_configs_bring_their_seed_recipe(compose_cfg, model, net, loss, primary, clip):
    cfg = compose_cfg(f"model={model}")
    assert {k: v for k, v in cfg.loss.items() if k in ("l1", "mse", "ssim")} == loss
    assert cfg.score.primary == primary and cfg.trainer.gradient_clip_val == clip
    module = hydra.utils.instantiate(cfg.model, _recursive_=False)
    assert isinstance(module.net, net)


def test_command_line_beats_the_recipe(compose_cfg):
    cfg = compose_cfg("model=unet", "loss=mse", "trainer.gradient_clip_val=0.5")
    assert cfg.loss.mse == 1.0 and "l1" not in cfg.loss and cfg.trainer.gradient_clip_val == 0.5
