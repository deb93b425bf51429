"""The pre-processing between an image and the model, shared by every entry point.

Datamodules, ``predict`` and the exported ONNX graph all use it: an image (file, array or
PIL image) is converted to 8-bit RGB and resized to the training size by
:func:`~anomalib_lite.data.image_io.resize_uint8` (bicubic, antialiased), then scaled to
float ``[0, 1]`` by :func:`to_model_input`. There is no mean/std normalisation. The
training size travels in the model checkpoint (``checkpoint["preprocessing"]``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from anomalib_lite.data.image_io import ImageLoadError, read_image_uint8, resize_uint8

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


@dataclass(frozen=True)
class Preprocessing:
    """How a model's input images are made: ``channels`` x ``image_size`` x ``image_size``."""

    image_size: int
    channels: int = 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load(self, source: ImageSource, name: str | None = None) -> Tensor:
        """A file path, array or PIL image → uint8 (C, S, S); raises :class:`ImageLoadError`."""
        if isinstance(source, (str, Path)):
            return read_image_uint8(source, self.image_size, self.channels)
        name = name or "<array>"
        image = array_to_pil(source, name) if isinstance(source, np.ndarray) else source
        if not isinstance(image, Image.Image):
            raise ImageLoadError(f"cannot read image {name}: expected a path, a numpy array "
                                 f"or a PIL image, got {type(source).__name__}")
        return resize_uint8(image, self.image_size, self.channels, name)
