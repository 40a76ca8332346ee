"""Round trips through MP4/GIF writers and every reader path, plus the failure modes."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from videogen.data import video_io
from videogen.errors import UsageError
from videogen.data.video_io import (GifWriter, Mp4Writer, VideoReadError, open_writer, read_video,
                               video_info)


def moving_square(num_frames=17, height=32, width=64, seed=0):
    """(F, H, W, 3) uint8: a bright square sliding right over a noisy dark background."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 40, size=(num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        x = 2 * i % (width - 8)
        frames[i, 8:16, x:x + 8] = (230, 60, 40)
    return frames


def assert_same_frames(clip, frames, tol):
    """Each decoded frame is nearest to its own source frame, and close on average."""
    clip, frames = clip.astype(np.float32), frames.astype(np.float32)
    errors = np.abs(clip[:, None] - frames[None]).mean(axis=(2, 3, 4))  # (F_clip, F_src)
    np.testing.assert_allclose(errors.diagonal(), errors.min(axis=1))  # ties allowed
    assert errors.diagonal().mean() < tol


def write_mp4(path, frames, fps=8):
    with Mp4Writer(str(path), fps=fps) as writer:
        for frame in frames:
            writer.write(frame)
    return writer


@pytest.fixture(autouse=True)
def fresh_warnings():
    """Each test sees its own 'once per process' warnings."""
    video_io._warned.clear()
    yield
    video_io._warned.clear()


def test_mp4_round_trip_decord_and_pyav(tmp_path):
    frames = moving_square()
    path = tmp_path / "out.mp4"
    writer = write_mp4(path, frames)
    assert writer.frames_written == 17
    assert os.listdir(tmp_path) == ["out.mp4"]  # the temp file was renamed, not copied
    for backend in ("decord", "pyav"):
        clip = read_video(str(path), backend=backend)
        assert clip.shape == (17, 32, 64, 3) and clip.dtype == np.uint8
        assert_same_frames(clip, frames, tol=10)  # lossy: yuv420p halves the chroma
    assert video_info(str(path)) == (17, 8.0, 32, 64)
    assert video_info(str(path), backend="pyav") == (17, 8.0, 32, 64)


def test_resample_and_cap(tmp_path):
    frames = moving_square(16)
    path = tmp_path / "clip.mp4"
    write_mp4(path, frames, fps=16)
    for backend in ("decord", "pyav"):
        half = read_video(str(path), fps=8, backend=backend)
        assert half.shape[0] == 8  # one second at 8 fps
        assert_same_frames(half, frames[::2], tol=10)  # nearest in time: 0, 2, 4, ...
        assert read_video(str(path), num_frames=5, backend=backend).shape[0] == 5
        assert read_video(str(path), fps=32, num_frames=7, backend=backend).shape[0] == 7


def test_exception_inside_with_leaves_nothing(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with Mp4Writer(str(path)) as writer:
            writer.write(moving_square(1)[0])
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_interrupt_keeps_existing_output(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"old video")
    with pytest.raises(KeyboardInterrupt):
        with open_writer(str(path), fps=8, crf=18) as writer:
            for frame in moving_square(3):
                writer.write(frame)
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old video"
    assert os.listdir(tmp_path) == ["out.mp4"]


def test_unwritable_destination_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="choose another -o path"):
        Mp4Writer(str(tmp_path / "missing_dir" / "out.mp4"))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="cannot write to"):
        GifWriter(str(a_file / "out.gif"))
    with pytest.raises(UsageError, match=r"\.mp4 or \.gif"):
        open_writer(str(tmp_path / "out.avi"))
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_corrupt_and_missing_files_raise_video_read_error(tmp_path, caplog):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with caplog.at_level(logging.WARNING, logger="videogen"):
        with pytest.raises(VideoReadError, match="bad.mp4"):
            read_video(str(bad))
    with pytest.raises(VideoReadError, match="bad.mp4"):
        video_info(str(bad))
    with pytest.raises(VideoReadError, match="nope.mp4"):
        read_video(str(tmp_path / "nope.mp4"))
    assert issubclass(VideoReadError, UsageError)


def test_pyav_fallback_when_decord_rejects(tmp_path, monkeypatch, caplog):
    path = tmp_path / "clip.mp4"
    write_mp4(path, moving_square(9))

    def reject(_path):
        raise RuntimeError("decord says no")

    monkeypatch.setattr(video_io, "_decord_reader", reject)
    with caplog.at_level(logging.WARNING, logger="videogen"):
        assert read_video(str(path)).shape == (9, 32, 64, 3)
        assert read_video(str(path)).shape == (9, 32, 64, 3)
    warnings = [r for r in caplog.records if "PyAV" in r.getMessage()]
    assert len(warnings) == 1  # once per process, not once per file
    with pytest.raises(VideoReadError, match="decord"):
        read_video(str(path), backend="decord")


def test_auto_backend_reads_what_decord_0_6_rejects(tmp_path):
    # decord 0.6 fails on 48-pixel-wide frames (a row-alignment bug) after opening
    path = tmp_path / "narrow.mp4"
    write_mp4(path, moving_square(5, height=32, width=48))
    assert read_video(str(path)).shape == (5, 32, 48, 3)


def test_odd_size_is_padded_and_logged(tmp_path, caplog):
    path = tmp_path / "odd.mp4"
    with caplog.at_level(logging.WARNING, logger="videogen"):
        write_mp4(path, moving_square(5, height=31, width=45))
    assert any("padding to 46x32" in r.getMessage() for r in caplog.records)
    assert read_video(str(path)).shape == (5, 32, 46, 3)


def test_gif_round_trip_with_still_frames(tmp_path):
    frames = moving_square(9, height=24, width=40)
    frames[4] = frames[3]  # Pillow merges identical neighbours; the reader must undo it
    path = tmp_path / "out.gif"
    with open_writer(str(path), fps=8) as writer:
        assert isinstance(writer, GifWriter)
        for frame in frames:
            writer.write(frame)
    assert os.listdir(tmp_path) == ["out.gif"]
    clip = read_video(str(path))
    assert clip.shape == (9, 24, 40, 3)
    assert_same_frames(clip, frames, tol=10)  # 256-colour palette
    count, fps, height, width = video_info(str(path))
    assert (count, height, width) == (9, 24, 40) and abs(fps - 8) < 0.5


def test_frame_directory(tmp_path, caplog):
    frames = moving_square(4, height=16, width=16)
    for i, frame in enumerate(frames[::-1]):  # names sort in reverse of creation order
        Image.fromarray(frame).save(tmp_path / f"{3 - i:04d}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    np.testing.assert_array_equal(read_video(str(tmp_path)), frames)
    assert video_info(str(tmp_path)) == (4, None, 16, 16)
    with caplog.at_level(logging.WARNING, logger="videogen"):
        assert read_video(str(tmp_path), fps=2, num_frames=3).shape[0] == 3
    assert any("no timing" in r.getMessage() for r in caplog.records)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="no PNG/JPG"):
        read_video(str(tmp_path / "empty"))
