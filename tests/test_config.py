"""Hydra composition of the real config tree, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from anomalib_lite.data import SpritesDataModule
from anomalib_lite.models import AnomalyModel, AnomalyModule
from anomalib_lite.models.components import BaselineAE, SpriteAE, UNetAE
from anomalib_lite.models.protocol import check_model, check_monitor
from anomalib_lite.utils import instantiate
from anomalib_lite.utils.checks import ConfigError
from anomalib_lite.utils.instantiate import build


def test_default_config_composes_and_instantiates(compose_cfg):
    cfg = compose_cfg()
    assert cfg.model.net.network._target_.endswith("SpriteAE")
    assert cfg.data.batch_size == 20 and cfg.trainer.max_epochs == 10
    assert cfg.model.optimizer.lr == pytest.approx(1e-3) and cfg.loss.mse == 1.0
    assert (cfg.data.n_test_normal, cfg.data.n_test_anomalous) == (1001, 1001)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    data = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model, _recursive_=False)
    assert isinstance(data, SpritesDataModule) and isinstance(model, AnomalyModule)
    assert isinstance(model.net.network, SpriteAE)
    assert model.scorer.primary == cfg.score.primary


def test_overrides_reach_the_objects(compose_cfg):
    cfg = compose_cfg("loss=l1_ssim", "model.optimizer.lr=0.01", "score.primary=l1_mean")
    model = hydra.utils.instantiate(cfg.model, _recursive_=False)
    assert model.net.loss.weights == {"l1": 1.0, "mse": 0.0, "ssim": 1.0}
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


SPRITE_NET = {"_target_": "anomalib_lite.models.ReconstructionModel",
              "network": {"_target_": "anomalib_lite.models.components.SpriteAE"},
              "loss": {"_target_": "anomalib_lite.losses.ReconstructionLoss", "mse": 1}}
PAYLOAD = {"_target_": "anomalib_lite.utils.io.os.system", "command": "touch pwned"}


@pytest.mark.parametrize("tampered", [PAYLOAD, {**SPRITE_NET, "network": PAYLOAD},
                                      {**SPRITE_NET, "loss": PAYLOAD}])
def test_tampered_checkpoint_config_is_refused_on_load(tmp_path, tampered):
    model = AnomalyModule(net=SPRITE_NET, optimizer={"_target_": "torch.optim.Adam"})
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": "2.6.0",
                "hyper_parameters": {**model.hparams, "net": tampered}}, path)
    with pytest.raises(ValueError, match="not allowed"):
        AnomalyModule.load_from_checkpoint(path, weights_only=True)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_users_own_package_is_allowed_only_when_named(tmp_path, monkeypatch):
    package = tmp_path / "my_models"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import torch\nfrom anomalib_lite.models import AnomalyModel\n\n"
        "class MeanModel(AnomalyModel):\n"
        "    map_names = ('bright',)\n"
        "    def anomaly_maps(self, images, names=None):\n"
        "        return {'bright': images.mean(1, keepdim=True)}\n"
        "    def fit(self, dataloader):\n"
        "        pass\n\n"
        "def make():\n    return MeanModel()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(instantiate, "_extra_packages", [])
    net = {"_target_": "my_models.MeanModel"}
    scoring = {"scores": {"b": {"map": "bright", "reduce": "max"}}, "primary": "b"}
    with pytest.raises(ValueError, match=r"not allowed.*allowed_packages"):
        AnomalyModule(net=net, scoring=scoring)
    instantiate.allow_packages(["my_models"])
    model = AnomalyModule(net=net, scoring=scoring)
    assert model.net.fittable and not model.net.trainable and model.monitor is None
    with pytest.raises(ValueError, match="not allowed"):  # functions stay refused
        build({"_target_": "my_models.make"}, "model.net")
    with pytest.raises(ValueError, match="allowed_packages"):
        instantiate.allow_packages(["my models; rm"])


class _NoMaps(AnomalyModel):
    def fit(self, dataloader):
        pass


class _MapsOnly(AnomalyModel):
    map_names = ("m",)

    def anomaly_maps(self, images, names=None):
        return {"m": images[:, :1]}


class _FitOnly(_MapsOnly):
    def fit(self, dataloader):
        pass


@pytest.mark.parametrize(("net", "maps", "kde", "monitor", "message"), [
    (torch.nn.Identity(), {"m"}, False, None, "not an anomaly model"),
    (_NoMaps(), {"m"}, False, None, r"does not implement anomaly_maps"),
    (_MapsOnly(), {"m"}, False, None, "neither training_objective.*nor fit"),
    (_FitOnly(), {"l1"}, False, None, r"map\(s\) \['l1'\].*its maps are \['m'\]"),
    (_FitOnly(), {"m"}, True, None, "no embedding"),
    (_FitOnly(), {"m"}, False, {"metric": "val/loss", "mode": "min"}, "model.monitor=null"),
    (_FitOnly(), {"m"}, False, {"metric": "val/x", "mode": "up"}, r"min\|max"),
])
def test_model_capabilities_are_checked_when_built(net, maps, kde, monitor, message):
    with pytest.raises(ConfigError, match=message):
        check_model(net, "model.net", maps, needs_embedding=kde)
        check_monitor(monitor, net)
    assert check_monitor(None, _FitOnly()) is None


def test_trainable_models_need_an_optimizer():
    with pytest.raises(ConfigError, match=r"model\.optimizer is not set"):
        AnomalyModule(net=SPRITE_NET)


@pytest.mark.parametrize(("model", "net", "loss", "primary", "clip"), [
    ("sprite_ae", SpriteAE, {"mse": 1.0}, "ssim_s4_top5", None),
    ("baseline", BaselineAE, {"l1": 1.0}, "l1_mean", None),
    ("unet", UNetAE, {"l1": 1.0}, "l1_mean", 1.0),
])
def test_model_configs_bring_their_seed_recipe(compose_cfg, model, net, loss, primary, clip):
    cfg = compose_cfg(f"model={model}")
    assert {k: v for k, v in cfg.loss.items() if k in ("l1", "mse", "ssim") and v} == loss
    assert cfg.score.primary == primary and cfg.trainer.gradient_clip_val == clip
    module = hydra.utils.instantiate(cfg.model, _recursive_=False)
    assert isinstance(module.net.network, net)


def test_command_line_beats_the_recipe(compose_cfg):
    cfg = compose_cfg("model=unet", "loss=mse", "trainer.gradient_clip_val=0.5")
    assert cfg.loss.mse == 1.0 and cfg.loss.l1 == 0.0 and cfg.trainer.gradient_clip_val == 0.5


def test_every_loss_weight_can_be_set_on_any_loss(compose_cfg):
    cfg = compose_cfg("loss=mse", "loss.l1=0.5")
    model = hydra.utils.instantiate(cfg.model, _recursive_=False)
    assert model.net.loss.weights == {"l1": 0.5, "mse": 1.0, "ssim": 0.0}
    for name in ("l1", "l1_ssim", "mse", "mse_ssim", "ssim"):
        assert {"l1", "mse", "ssim"} <= set(compose_cfg(f"loss={name}").loss), name


def test_partial_recipes_are_not_model_choices(compose_cfg):
    from hydra.errors import MissingConfigException

    from anomalib_lite.train import CONFIG_DIR

    for partial in ("_seed000", "_synthetic", "seed000", "synthetic"):
        with pytest.raises(MissingConfigException) as caught:
            compose_cfg(f"model={partial}")
        options = str(caught.value).split("Available options in 'model':")[1]
        assert "seed000" not in options and "synthetic" not in options
    choices = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
    assert "sprite_ae" in choices and not any(c.startswith("_") for c in choices)
    for choice in choices:  # every choice is a whole model
        assert compose_cfg(f"model={choice}").model.net._target_, choice


def test_a_schedule_that_never_validates_is_refused_before_training(compose_cfg):
    from anomalib_lite.train import check_validation_schedule

    cfg = compose_cfg("model=feature_ae", "trainer.max_epochs=3")
    with pytest.raises(ConfigError, match=r"check_val_every_n_epoch=5 > trainer\.max_epochs=3"):
        check_validation_schedule(cfg)
    check_validation_schedule(compose_cfg("model=feature_ae", "trainer.max_epochs=5"))
    check_validation_schedule(compose_cfg("model=pca", "trainer.max_epochs=1",
                                          "trainer.check_val_every_n_epoch=5"))
