"""Given frames from files, for continuation (`--init-video`) and image-to-video (`--init-image`).

A video is decoded lazily with PyAV, one frame at a time, so a long clip never sits in
memory whole. Both are opened and their first frame decoded before anything is written,
so a bad file is one UsageError and the output file is left as it was.
"""

from __future__ import annotations

import itertools
import os
from typing import Iterator, Optional

import numpy as np

from videogen.data.video_io import IMAGE_EXTENSIONS
from videogen.errors import UsageError


def _check_file(path: str, label: str) -> None:
    if not os.path.exists(path):
        raise UsageError(f"{label} not found; give a readable file")
    if not os.path.isfile(path):
        raise UsageError(f"{label} is not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{label} is not readable (permission denied)")
    if os.path.getsize(path) == 0:
        raise UsageError(f"{label} is empty")


def _decode(path: str) -> Iterator[np.ndarray]:
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("it has no video stream")
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def open_init_video(path: str, label: Optional[str] = None) -> Iterator[np.ndarray]:
    """The frames of a video file (H, W, 3) uint8, decoded as they are read. `label` names
    the file in errors (default: the CLI option and the path)."""
    label = label or f"--init-video '{path}'"
    _check_file(path, label)
    frames = _guarded(path, label, _decode(path))
    try:
        first = next(frames)
    except StopIteration:
        raise UsageError(f"{label} has no video frames") from None
    return itertools.chain([first], frames)


def _guarded(path: str, label: str, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """`frames`, with a decoding error at any frame as one UsageError naming the file."""
    import av

    try:
        yield from frames
    except (av.error.FFmpegError, ValueError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"{label} is not a readable video ({message}); "
                         "give an MP4, WebM, MOV or GIF file") from None


def read_init_image(path: str, label: Optional[str] = None) -> np.ndarray:
    """One PNG or JPEG image as an (H, W, 3) uint8 frame; `label` as for open_init_video."""
    from PIL import Image, UnidentifiedImageError

    label = label or f"--init-image '{path}'"
    _check_file(path, label)
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise UsageError(f"{label}: unsupported image format '{ext or 'none'}'; "
                         f"use {', '.join(IMAGE_EXTENSIONS)}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UsageError(f"{label} is not a readable image ({str(err).splitlines()[0]})") from None
