"""Safe image and mask loading with PIL: any common mode in, fixed-size tensors out.

Images of any PIL mode (grayscale, 16-bit, palette, RGBA, CMYK, ...) become 8-bit RGB (or
L); alpha is composited onto black; 16-bit values are scaled to 8 bits. EXIF orientation is
ignored so that an image and its mask always share pixel coordinates. Images are resized to
``size``: one number (a square) or ``(height, width)``; the aspect ratio is not kept, so give
tall or wide images a matching ``(height, width)``. PIL's decompression-bomb limit
(``PIL.Image.MAX_IMAGE_PIXELS``) is left as it is and enforced strictly: an image above it
is refused, never just warned about.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


class ImageLoadError(OSError):
    """An image or mask file cannot be read; the message names the file and the reason."""


def size_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``(height, width)`` of a size given as one number (a square) or ``(height, width)``."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _open(path: str | Path) -> Image.Image:
    """Open and fully decode ``path`` (bomb warnings are errors); raise :class:`ImageLoadError`."""
    try:
        with Image.open(path) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.size[0] * img.size[1] > limit:  # checked here: thread-safe
                raise Image.DecompressionBombError(
                    f"{img.size[0]}x{img.size[1]} pixels exceed the limit of {limit}")
            img.load()
            return img
    except Image.DecompressionBombError as err:
        reason = (f"{type(err).__name__}: {err} (a decompression-bomb guard; the limit is "
                  "PIL.Image.MAX_IMAGE_PIXELS)")
        raise ImageLoadError(f"cannot read image {path}: {reason}") from err
    except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        raise ImageLoadError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


def _to_8bit(img: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit ``L`` or ``RGB``: 16-bit scaled, alpha composited onto black."""
    if img.mode in SIXTEEN_BIT_MODES:  # 16-bit grayscale PNG/TIFF (PIL would clip at 255)
        values = np.asarray(img, dtype=np.float64).clip(0, 65535) / 257.0
        return Image.fromarray(values.round().astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ALPHA_MODES:
        black = Image.new("RGBA", img.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, img.convert("RGBA")).convert("RGB")
    return img if img.mode in ("L", "RGB") else img.convert("RGB")


def image_dims(path: str | Path) -> tuple[int, int]:
    """Width and height of an image from its header (no decoding)."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageLoadError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


Size = int | tuple[int, int]


def resize_uint8(img: Image.Image, size: Size, channels: int = 3,
                 name: str | Path = "<array>") -> Tensor:
    """Decoded PIL image → uint8 (C, H, W) at ``size`` (one number or ``(height, width)``):
    any mode to 8-bit, bicubic antialiased resize; C is 3 (RGB) or 1 (L). The one
    pre-processing step of every image source."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    height, width = size_hw(size)
    try:
        img = _to_8bit(img).convert("RGB" if channels == 3 else "L")
        img = img.resize((width, height), Image.Resampling.BICUBIC)
    except ValueError as err:  # a mode PIL cannot convert (e.g. LAB)
        raise ImageLoadError(f"cannot read image {name}: {type(err).__name__}: {err}") from err
    array = np.asarray(img, dtype=np.uint8).reshape(height, width, channels)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def read_image_uint8(path: str | Path, size: Size, channels: int = 3) -> Tensor:
    """Image file → uint8 (C, H, W) (see :func:`resize_uint8`)."""
    return resize_uint8(_open(path), size, channels, path)


def read_image_with_dims(path: str | Path, size: Size,
                         channels: int = 3) -> tuple[Tensor, tuple[int, int]]:
    """:func:`read_image_uint8` and the file's own ``(width, height)``."""
    img = _open(path)
    return resize_uint8(img, size, channels, path), img.size


def read_mask_bool(path: str | Path, size: Size) -> Tensor:
    """Mask file → bool (1, H, W): any non-zero value (in any channel) is anomalous."""
    img = _open(path)
    if img.mode in ("P", "PA"):
        img = img.convert("RGB")  # palette indices need not map 0 to black
    values = np.asarray(img)
    if values.ndim == 3:
        channels = values.shape[2]
        values = values[..., : channels - 1 if img.mode in ALPHA_MODES else channels].max(axis=2)
    binary = Image.fromarray((values > 0).astype(np.uint8) * 255)
    height, width = size_hw(size)
    resized = np.asarray(binary.resize((width, height), Image.Resampling.NEAREST)) > 0
    return torch.from_numpy(resized.copy()).unsqueeze(0)


def load_image(path: str | Path, size: Size, channels: int = 3) -> Tensor:
    """Image file → float (C, H, W) in [0, 1] (see :func:`read_image_uint8`)."""
    return read_image_uint8(path, size, channels).float() / 255.0


def load_mask(path: str | Path, size: Size) -> Tensor:
    """Mask file → float (1, H, W) of 0/1, nearest-neighbour resized."""
    return read_mask_bool(path, size).float()
