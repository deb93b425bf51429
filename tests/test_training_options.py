"""Training options: random-crop training and the exponential moving average of weights."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from anomalib_lite.callbacks import EMA
from anomalib_lite.callbacks.ema import RAW_KEY, ema_decay
from anomalib_lite.data.preprocess import random_crops
from anomalib_lite.train import train
from anomalib_lite.utils.checks import ConfigError


def test_random_crops_are_the_slices_at_the_drawn_offsets():
    images = torch.arange(4 * 2 * 10 * 12, dtype=torch.float32).reshape(4, 2, 10, 12)
    crops = random_crops(images, (6, 5), torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    tops = torch.randint(0, 5, (4,), generator=g).tolist()
    lefts = torch.randint(0, 8, (4,), generator=g).tolist()
    for crop, image, t, x in zip(crops, images, tops, lefts, strict=True):
        assert torch.equal(crop, image[:, t:t + 6, x:x + 5])
    assert len({(t, x) for t, x in zip(tops, lefts, strict=True)}) > 1  # each image its own offset
    nhwc = random_crops(images.contiguous(memory_format=torch.channels_last), (6, 5))
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="a 11 x 5 crop of 10 x 12"):
        random_crops(images, (11, 5))


def test_crop_training_steps_on_crops_and_scores_whole_images(fast_cfg, monkeypatch):
    cfg = fast_cfg("model=draem_lite", "model.net.network.recon_widths=[8,16,32,64]",
                   "model.net.network.seg_widths=[8,16,32,64]", "+model.train_crop=16",
                   "data.image_size=32", "callbacks=none")
    seen: dict[bool, set] = {True: set(), False: set()}
    from anomalib_lite.models import AnomalyModule

    original = AnomalyModule.on_fit_start

    def hook_network(module: AnomalyModule) -> None:
        module.net.network.register_forward_pre_hook(
            lambda net, args: seen[net.training].add(tuple(args[0].shape[-2:])))
        original(module)

    monkeypatch.setattr(AnomalyModule, "on_fit_start", hook_network)  # a spy, not a mock
    _, results = train(cfg)
    assert seen[True] == {(16, 16)}  # training steps
    assert seen[False] == {(32, 32)}  # validation and test: whole images
    assert results["config"]["model"]["train_crop"] == 16


@pytest.mark.parametrize("model", ["baseline", "pca"])  # with and without a network
def test_a_crop_larger_than_the_images_is_refused_before_training(fast_cfg, tmp_path, model):
    with pytest.raises(ConfigError, match=r"model\.train_crop=\[48, 48\] is larger than the "
                                          r"images \(data\.image_size=32\)"):
        train(fast_cfg(f"model={model}", "+model.train_crop=48", "data.image_size=32"))
    assert not (tmp_path / "checkpoints").exists()


class WeightRecorder(pl.Callback):
    """The network's trained parameters after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

        self.validated: list[tuple[int, dict[str, torch.Tensor]]] = []

    @staticmethod
    def weights(pl_module) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in pl_module.net.named_parameters()
                if p.requires_grad}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(self.weights(pl_module))

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validated.append((len(self.steps), self.weights(pl_module)))


def test_ema_is_the_moving_average_of_the_step_weights(compose_cfg, tmp_path):
    from anomalib_lite.data import SpritesDataModule
    from anomalib_lite.models import AnomalyModule

    cfg = compose_cfg("model=baseline")
    kwargs = {k: v for k, v in cfg.model.items() if k != "_target_"}
    model = AnomalyModule(**kwargs)
    initial = {n: p.detach().clone() for n, p in model.net.named_parameters()}
    datamodule = SpritesDataModule(n_train=48, n_val=8, n_test_normal=4, n_test_anomalous=4,
                                   image_size=32, batch_size=8)
    recorder, ema = WeightRecorder(), EMA(decay=0.6)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[recorder, ema, checkpoint], default_root_dir=tmp_path)
    trainer.fit(model, datamodule=datamodule)
    assert len(recorder.steps) == 12
    expected = dict(initial)
    averages = []  # the average after each step
    for step, weights in enumerate(recorder.steps):
        d = ema_decay(0.6, step)
        expected = {n: d * expected[n] + (1 - d) * weights[n] for n in weights}
        averages.append(expected)
    assert [steps for steps, _ in recorder.validated] == [6, 12]  # validation sees the average
    for steps, weights in recorder.validated:
        for name, value in weights.items():
            torch.testing.assert_close(value, averages[steps - 1][name], atol=1e-5, rtol=1e-4)
    assert ema_decay(0.6, 0) == pytest.approx(0.1) and ema_decay(0.6, 50) == 0.6
    for name, param in model.net.named_parameters():
        torch.testing.assert_close(param.detach(), expected[name], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(expected[name], recorder.steps[-1][name])  # not the raw
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    for name, value in expected.items():
        torch.testing.assert_close(saved["state_dict"][f"net.{name}"], value, atol=1e-5,
                                   rtol=1e-4)
        torch.testing.assert_close(saved[RAW_KEY][f"net.{name}"], recorder.steps[-1][name])


def test_ema_decay_outside_0_1_is_refused():
    with pytest.raises(ConfigError, match=r"callbacks\.ema\.decay=1\.5"):
        EMA(decay=1.5)
