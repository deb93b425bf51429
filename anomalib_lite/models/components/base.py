"""Input checks shared by the reconstruction networks."""

from __future__ import annotations

from torch import Tensor


def check_images(x: Tensor, channels: int, multiple: int, name: str) -> None:
    """Validate a batch of images up front, with a message that names the network."""
    if x.ndim != 4:
        raise ValueError(f"{name} expects images shaped (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} was built for {channels} channels, got {x.shape[1]} "
            f"(set model.net.in_channels={x.shape[1]})"
        )
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        wrong = " and ".join(f"{side} {value}" for side, value in (("height", height),
                                                                  ("width", width))
                             if value % multiple)
        raise ValueError(
            f"{name} needs the height and the width divisible by {multiple}; got height "
            f"{height}, width {width}: {wrong} {'is' if ' and ' not in wrong else 'are'} not "
            "(change data.image_size)"
        )
