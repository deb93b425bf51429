"""The pre-processing between an image and the model, shared by every entry point.

Datamodules, ``predict`` and the exported ONNX graph all use it: an image (file, array or
PIL image) is converted to 8-bit RGB and resized to the training size by
:func:`~anomalib_lite.data.image_io.resize_uint8` (bicubic, antialiased), then scaled to
float ``[0, 1]`` by :func:`to_model_input`. There is no mean/std normalisation. The
training size (one number for a square, or ``[height, width]``) travels in the model
checkpoint (``checkpoint["preprocessing"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from anomalib_lite.data.image_io import ImageLoadError, read_image_uint8, resize_uint8
from anomalib_lite.utils.checks import ConfigError

ImageSource = str | Path | np.ndarray | Image.Image
MAX_VALUE = 255.0  # uint8 → [0, 1]


def to_model_input(images: Tensor) -> Tensor:
    """uint8 images (any shape) → float32 in [0, 1]: the model's input scaling."""
    if images.dtype != torch.uint8:
        raise TypeError(f"model input images must be uint8, got {images.dtype}")
    return images.float() / MAX_VALUE


def array_to_pil(array: np.ndarray, name: str = "<array>") -> Image.Image:
    """(H, W) or (H, W, C) array → PIL image; C in 1, 3, 4.

    uint8 and uint16 arrays are taken as they are (16-bit is scaled to 8 bits like a
    16-bit file); float arrays must hold values in [0, 1].
    """
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageLoadError(f"cannot read image {name}: expected an (H, W) or (H, W, C) array "
                             f"with C in 1, 3, 4, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if array.size and not (np.isfinite(array).all() and array.min() >= 0
                               and array.max() <= 1):
            raise ImageLoadError(f"cannot read image {name}: float arrays must hold values "
                                 "in [0, 1]")
        array = (array * 255.0).round().astype(np.uint8)
    elif array.dtype == np.uint16 and array.ndim == 2:
        return Image.fromarray(array)  # mode I;16, scaled to 8 bits like a 16-bit file
    elif array.dtype != np.uint8:
        raise ImageLoadError(f"cannot read image {name}: unsupported array dtype {array.dtype} "
                             "(use uint8, 2-D uint16 or float in [0, 1])")
    return Image.fromarray(array)


def image_size_hw(value: Any, key: str = "data.image_size") -> tuple[int, int]:
    """``(height, width)`` of an image size given as one positive integer (a square) or as
    ``[height, width]``; raises :class:`ConfigError` naming ``key`` otherwise."""
    def positive(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if positive(value):
        return value, value
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 \
            and all(positive(v) for v in value):
        return int(value[0]), int(value[1])
    if value is not None and not isinstance(value, (str, bytes, int, float, list, tuple)):
        try:  # e.g. an OmegaConf ListConfig
            return image_size_hw(list(value), key)
        except (TypeError, ConfigError):
            pass
    raise ConfigError(f"{key}={value!r} is invalid: expected a positive integer (a square) or "
                      f"[height, width] (override it, e.g. {key}=128 or {key}=[256,64])")


def format_size(size: int | tuple[int, int]) -> str:
    """``128`` or ``[256, 64]``: an image size as it is written in the config."""
    height, width = (size, size) if isinstance(size, int) else size
    return str(height) if height == width else f"[{height}, {width}]"


@dataclass(frozen=True)
class Preprocessing:
    """How a model's input images are made: ``channels`` x height x width, from
    ``image_size`` (one number for a square, or ``(height, width)``)."""

    image_size: int | tuple[int, int]
    channels: int = 3

    def __post_init__(self) -> None:
        height, width = image_size_hw(self.image_size, "image_size")
        object.__setattr__(self, "image_size", height if height == width else (height, width))

    @property
    def height(self) -> int:
        return self.hw[0]

    @property
    def width(self) -> int:
        return self.hw[1]

    @property
    def hw(self) -> tuple[int, int]:
        """``(height, width)``."""
        return image_size_hw(self.image_size, "image_size")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the checkpoint: ``image_size`` is a number or ``[height, width]``."""
        data = asdict(self)
        if not isinstance(self.image_size, int):
            data["image_size"] = list(self.image_size)
        return data

    def load(self, source: ImageSource, name: str | None = None) -> Tensor:
        """A file path, array or PIL image → uint8 (C, H, W); raises :class:`ImageLoadError`."""
        if isinstance(source, (str, Path)):
            return read_image_uint8(source, self.image_size, self.channels)
        name = name or "<array>"
        image = array_to_pil(source, name) if isinstance(source, np.ndarray) else source
        if not isinstance(image, Image.Image):
            raise ImageLoadError(f"cannot read image {name}: expected a path, a numpy array "
                                 f"or a PIL image, got {type(source).__name__}")
        return resize_uint8(image, self.image_size, self.channels, name)


def random_crops(images: Tensor, size: tuple[int, int],
                 generator: torch.Generator | None = None) -> Tensor:
    """One random ``size`` (height, width) crop of each image in ``(N, C, H, W)``, at an
    offset drawn from ``generator`` (on the CPU); the memory layout is kept."""
    n, _, height, width = images.shape
    h, w = size
    if h > height or w > width:
        raise ValueError(f"a {h} x {w} crop of {height} x {width} images")
    tops = torch.randint(0, height - h + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(0, width - w + 1, (n,), generator=generator).tolist()
    crops = torch.stack([image[:, t:t + h, x:x + w]
                         for image, t, x in zip(images, tops, lefts, strict=True)])
    return crops.contiguous(memory_format=torch.channels_last) \
        if images.is_contiguous(memory_format=torch.channels_last) \
        and not images.is_contiguous() else crops
