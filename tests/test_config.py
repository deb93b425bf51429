"""Hydra composition of the real config tree, and clear errors for bad values."""

from __future__ import annotations

import hydra
import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from anomalib_lite.data import SpritesDataModule
from anomalib_lite.models import AnomalyModule
from anomalib_lite.models.components import BaselineAE, SpriteAE, UNetAE


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


def test_disallowed_target_is_refused(compose_cfg):
    cfg = compose_cfg("model.net._target_=os.system")
    with pytest.raises(InstantiationException, match="not allowed"):
        hydra.utils.instantiate(cfg.model, _recursive_=False)


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
