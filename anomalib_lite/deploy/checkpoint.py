"""Load a trained model safely: ``weights_only=True``, clear errors, its pre-processing.

A checkpoint that holds pickled objects other than tensors and plain values (classes,
functions, ``__reduce__`` payloads) is refused by PyTorch's weights-only unpickler before
any of it runs; :func:`load_model` turns that refusal into :class:`UnsafeCheckpointError`
naming the file. Configs inside a checkpoint are instantiated only under the allow-list of
:mod:`anomalib_lite.utils.instantiate`.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from anomalib_lite.data.preprocess import Preprocessing, image_size_hw
from anomalib_lite.models.module import FORMAT, FORMAT_KEY, AnomalyModule
from anomalib_lite.utils.checks import ConfigError

EXAMPLE_CKPT = "outputs/train/runs/<run>/model.ckpt"


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the reason."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds pickled code or objects; it was refused and nothing of it ran."""


def _refusal_detail(err: Exception) -> str:
    """The unpickler's own reason (e.g. ``unsupported GLOBAL posix.system``), if any."""
    match = re.search(r"(unsupported GLOBAL[^\n]*|Unsupported[^\n]*)", str(err), re.IGNORECASE)
    return match.group(1).strip() if match else type(err).__name__


def load_model(path: str | Path | None, module_class: type[AnomalyModule] = AnomalyModule,
               key: str = "ckpt", example: str | None = None) -> AnomalyModule:
    """Rebuild the model of a checkpoint (or of a run directory's ``model.ckpt``) in eval
    mode on the CPU, with ``weights_only=True``.

    Raises :class:`ConfigError` naming ``key`` (and the ``example`` command) when no path
    is given, :class:`CheckpointError` for a missing or unreadable file and
    :class:`UnsafeCheckpointError` for one that carries pickled objects.
    """
    if path is None or str(path) == "":
        raise ConfigError(f"{key} is not set: pass the model.ckpt of a training run, e.g.\n  "
                          f"{example or f'{key}={EXAMPLE_CKPT}'}")
    path = Path(path).expanduser()
    if path.is_dir() and (path / "model.ckpt").is_file():  # a training run's directory
        path = path / "model.ckpt"
    if not path.is_file():
        raise CheckpointError(f"{key}={str(path)!r}: checkpoint file not found (pass the "
                              f"model.ckpt of a training run, e.g. {key}={EXAMPLE_CKPT})")
    layout = _layout(path)
    if layout is not None and layout != FORMAT:
        raise CheckpointError(f"cannot use checkpoint {path}: it was written by an older "
                              f"anomalib_lite (checkpoint layout {layout}, this version reads "
                              f"{FORMAT}); retrain the model with this version")
    try:
        model = module_class.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None
        raise UnsafeCheckpointError(
            f"refused to load checkpoint {path}: it contains pickled objects other than "
            f"tensors and plain values ({_refusal_detail(err)}). It was loaded with "
            "weights_only=True, so nothing from it was executed. Use a model.ckpt written by "
            "anomalib_lite.train, or a checkpoint from a source you trust.") from None
    except (KeyError, TypeError, EOFError, RuntimeError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: not an anomalib_lite model "
                              f"checkpoint, or a corrupt one ({type(err).__name__}: {err})"
                              ) from None
    return model.eval()


def _layout(path: Path) -> int | str | None:
    """The checkpoint's layout version (``"none"`` when it has none; None if unreadable)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    return checkpoint.get(FORMAT_KEY, "none") if isinstance(checkpoint, dict) else None


def preprocessing_of(model: AnomalyModule, image_size: Any = None,
                     source: str | Path = "the checkpoint") -> Preprocessing:
    """The model's input pre-processing from its checkpoint; ``image_size`` (one number or
    ``[height, width]``) overrides it.

    Checkpoints written before the pre-processing was recorded need ``image_size=``.
    """
    stored = dict(model.preprocessing or {})
    if image_size is not None:
        try:
            height, width = image_size_hw(image_size, "image_size")
        except ConfigError as error:
            raise ConfigError(f"{error}; give the data.image_size the model was trained "
                              "with") from None
        stored["image_size"] = height if height == width else [height, width]
    if "image_size" not in stored:
        raise ConfigError(f"{source} does not record the image size the model was trained at "
                          "(it predates that field): pass the training data.image_size, "
                          "e.g. image_size=128 or image_size=[256,64]")
    return Preprocessing(**stored)
