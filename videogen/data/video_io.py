"""Reading and writing video files.

Frames are numpy arrays: one frame is (H, W, 3) uint8 RGB, a clip is (F, H, W, 3).

Reading: `read_video(path)` opens a video file with decord (fast, random access) and
falls back to PyAV when decord cannot; it also takes a GIF or a directory of PNG/JPG
frames. `fps=` resamples by timestamp, `num_frames=` caps the length.

Writing: `open_writer(path, fps, crf)` streams frames to an MP4 (PyAV, libx264) or a
GIF (imageio). Both write to a temporary file beside the output and rename it into
place only when the `with` block ends cleanly, so an interrupted run never leaves a
half-written file at the output path.
"""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from typing import Optional

import numpy as np

from videogen.data.frame_window import collect_frames, nearest_indices, source_index, window
from videogen.errors import UsageError
from videogen.utils.atomic import discard, hold, release, replace_into, temp_sibling

logger = logging.getLogger("videogen")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
WRITER_EXTENSIONS = (".mp4", ".gif")
GIF_DEFAULT_DELAY_MS = 100  # what browsers show for a GIF frame with no delay set

_warned: set = set()  # keys of warnings already logged by this process


class VideoReadError(UsageError):
    """A video (or frame directory) that is missing, corrupt or unreadable."""


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


# --------------------------------------------------------------------------- reading


def read_video(
    path: str,
    *,
    num_frames: Optional[int] = None,
    fps: Optional[float] = None,
    start: int = 0,
    backend: str = "auto",
) -> np.ndarray:
    """Read a video file, GIF or frame directory into (F, H, W, 3) uint8 RGB.

    fps: resample to this rate, taking for each output time the nearest stored frame
    (None keeps every stored frame). start, num_frames: keep at most num_frames frames
    from frame `start` on, both counted after resampling (a training clip's window).
    A video file is decoded only up to the window's last frame, only the frames kept
    are converted to RGB, and they go straight into the returned array: reading a
    window costs about its own size, not the file's. backend: "auto" (decord, then
    PyAV), "decord" or "pyav"; it only matters for video files. Raises VideoReadError
    naming the file, also when the window holds no frame.
    """
    if fps is not None and fps <= 0:
        raise UsageError(f"fps must be positive, not {fps}")
    if num_frames is not None and num_frames < 1:
        raise UsageError(f"num_frames must be at least 1, not {num_frames}")
    if start < 0:
        raise UsageError(f"start must be at least 0, not {start}")
    kind = _source_kind(path)
    if kind == "dir":
        frames = _read_frame_dir(path, fps, start, num_frames)
    elif kind == "gif":
        frames = _read_gif(path, fps, start, num_frames)
    else:
        frames = _read_with_backend(path, fps, start, num_frames, backend)
    if len(frames) == 0:
        raise VideoReadError(f"cannot read video '{path}': it has no frames from frame {start} on")
    return frames


def frame_count(path: str, *, fps: Optional[float] = None, backend: str = "auto") -> int:
    """How many frames `read_video(path, fps=fps)` gives, from the file's header where it has
    one (a video file is not decoded; the header can be wrong, so a read may give fewer)."""
    count, stored_fps, _, _ = video_info(path, backend=backend)
    if fps is None or stored_fps is None:
        return count
    return len(nearest_indices(count, stored_fps, fps))


def video_info(path: str, *, backend: str = "auto") -> tuple:
    """(num_frames, fps, height, width) of a video file, GIF or frame directory.

    fps is None for a frame directory (it carries no timing). For a GIF, frames held
    for several delays count as several frames at the GIF's shortest delay.
    """
    kind = _source_kind(path)
    if kind == "dir":
        files = _frame_files(path)
        height, width = _read_image(files[0], path).shape[:2]
        return len(files), None, height, width
    if kind == "gif":
        frames, delays_ms = _decode_gif(path)
        count = len(_gif_sample_indices(delays_ms, 1000.0 / min(delays_ms)))
        return count, 1000.0 / min(delays_ms), frames[0].shape[0], frames[0].shape[1]
    if backend in ("auto", "decord"):
        try:
            return _decord_info(path)
        except Exception as err:  # decord raises RuntimeError or its own DECORDError
            _fallback_or_raise(path, err, backend)
    return _guard(path, _pyav_info, path)


def _source_kind(path: str) -> str:
    if os.path.isdir(path):
        return "dir"
    if not os.path.isfile(path):
        raise VideoReadError(f"cannot read video '{path}': no such file; check the path")
    return "gif" if path.lower().endswith(".gif") else "video"


def _guard(path: str, fn, *args):
    """Call fn(*args), turning any decoding failure into a VideoReadError naming path."""
    try:
        return fn(*args)
    except VideoReadError:
        raise
    except Exception as err:  # PyAV / PIL / imageio raise many unrelated types
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VideoReadError(
            f"cannot read video '{path}': {reason}; re-encode the file or leave it out"
        ) from None


# decord, with PyAV as the fallback


def _read_with_backend(path: str, fps, start: int, num_frames, backend: str) -> np.ndarray:
    if backend not in ("auto", "decord", "pyav"):
        raise UsageError(f"video backend must be auto, decord or pyav, not '{backend}'")
    if backend in ("auto", "decord"):
        try:
            return _decord_read(path, fps, start, num_frames)
        except Exception as err:  # decord raises RuntimeError or its own DECORDError
            _fallback_or_raise(path, err, backend)
    return _guard(path, _pyav_read, path, fps, start, num_frames)


def _fallback_or_raise(path: str, err: Exception, backend: str) -> None:
    if backend == "decord":
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VideoReadError(f"cannot read video '{path}' with decord: {reason}") from None
    _warn_once("decord-fallback", f"decord cannot read '{path}' ({type(err).__name__}); "
               "reading the videos it rejects with PyAV (slower)")


def _decord_reader(path: str):
    import decord  # deferred: optional speed-up, PyAV covers its absence

    # One decoding thread: parallelism comes from data-loader workers, not per file.
    return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)


def _decord_read(path: str, fps, start: int, num_frames) -> np.ndarray:
    reader = _decord_reader(path)
    indices = window(nearest_indices(len(reader), reader.get_avg_fps(), fps), start, num_frames)

    def frames():  # one frame a call: decord's get_batch would hold the clip twice (its array + numpy's)
        previous, frame = None, None
        for index in indices.tolist():
            if index != previous:  # resampling up repeats a frame: decode it once
                frame, previous = reader.get_batch([index]).asnumpy()[0], index
            yield frame

    return collect_frames(frames(), len(indices))


def _decord_info(path: str) -> tuple:
    reader = _decord_reader(path)
    height, width = reader[0].shape[:2]
    return len(reader), float(reader.get_avg_fps()), height, width


def _pyav_stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise ValueError("the video stream has no frame rate")
    return float(rate)


def _pyav_read(path: str, fps, start: int, num_frames) -> np.ndarray:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = _pyav_window(container.decode(stream), _pyav_stream_fps(stream), fps, start, num_frames)
        return collect_frames(frames, num_frames)


def _pyav_window(decoded, stored_fps: float, fps, start: int, num_frames):
    """RGB frames start.. of the resampled clip from frames decoded in order: decoding stops
    at the window's last frame, and only the frames kept are converted.

    The frame count in the header (stream.frames) can be 0 or wrong, so the clip's end is
    where decoding ends: output times still inside the clip then take its last frame, as
    `nearest_indices` clamps them.
    """
    stop = None if num_frames is None else start + num_frames
    k, count, last, rgb = start, 0, None, None
    for i, frame in enumerate(decoded):
        count, last, rgb = i + 1, frame, None
        while (stop is None or k < stop) and source_index(k, stored_fps, fps) == i:
            rgb = frame.to_ndarray(format="rgb24") if rgb is None else rgb
            yield rgb
            k += 1
        if stop is not None and k >= stop:
            return
    if last is None:
        return
    total = len(nearest_indices(count, stored_fps, fps))
    rgb = None
    while k < (total if stop is None else min(stop, total)):
        rgb = last.to_ndarray(format="rgb24") if rgb is None else rgb
        yield rgb
        k += 1


def _pyav_info(path: str) -> tuple:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        count = stream.frames or sum(1 for _ in container.decode(stream))
        return count, _pyav_stream_fps(stream), stream.height, stream.width


# GIF and frame directories


def _decode_gif(path: str) -> tuple:
    """(list of (H, W, 3) frames, list of delays in ms) as stored in the GIF."""
    from PIL import Image, ImageSequence

    def decode():
        frames, delays = [], []
        with Image.open(path) as image:
            for frame in ImageSequence.Iterator(image):
                frames.append(np.asarray(frame.convert("RGB")))
                delays.append(frame.info.get("duration") or GIF_DEFAULT_DELAY_MS)
        return frames, delays

    return _guard(path, decode)


def _gif_sample_indices(delays_ms: list, fps: float) -> np.ndarray:
    """Index of the GIF frame on screen at each time 0, 1/fps, ... of the animation.

    GIF writers merge identical consecutive frames into one longer frame, so stored
    frames are not evenly spaced; sampling by time undoes the merge.
    """
    starts_ms = np.concatenate([[0.0], np.cumsum(delays_ms)[:-1]])
    total_ms = float(np.sum(delays_ms))
    count = max(1, math.ceil(total_ms * fps / 1000.0 - 1e-6))
    times_ms = np.arange(count) * 1000.0 / fps
    return np.searchsorted(starts_ms, times_ms + 1e-6, side="right") - 1


def _read_gif(path: str, fps, start: int, num_frames) -> np.ndarray:
    frames, delays_ms = _decode_gif(path)  # Pillow decodes every frame anyway (GIF frames build on each other)
    indices = _gif_sample_indices(delays_ms, fps or 1000.0 / min(delays_ms))
    return collect_frames((frames[i] for i in window(indices, start, num_frames)), None)


def _frame_files(path: str) -> list:
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise VideoReadError(f"cannot read video '{path}': the directory has no PNG/JPG frames")
    return [os.path.join(path, n) for n in names]


def _read_image(file: str, video_path: str) -> np.ndarray:
    from PIL import Image

    def load():
        with Image.open(file) as image:
            return np.asarray(image.convert("RGB"))

    return _guard(video_path, load)


def _read_frame_dir(path: str, fps, start: int, num_frames) -> np.ndarray:
    if fps is not None:
        _warn_once("dir-fps", f"frame directory '{path}' has no timing; fps={fps} is "
                   "ignored and every frame is used")
    frames = [_read_image(f, path) for f in window(_frame_files(path), start, num_frames)]
    if len({f.shape for f in frames}) > 1:
        raise VideoReadError(f"cannot read video '{path}': its frames differ in size")
    return collect_frames(frames, None)


# --------------------------------------------------------------------------- writing
def open_writer(path: str, fps: float = 8, crf: int = 18):
    """An Mp4Writer or GifWriter for `path`, chosen by its extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".mp4":
        return Mp4Writer(path, fps=fps, crf=crf)
    if ext == ".gif":
        return GifWriter(path, fps=fps)
    raise UsageError(f"cannot write '{path}': the output must end in "
                     f"{' or '.join(WRITER_EXTENSIONS)}")


class _AtomicWriter:
    """Frames go to a temporary sibling of `path` (utils/atomic), renamed into place on success.

    Subclasses implement `_add(frame)`, `_finish()` (flush and close the temporary
    file) and `_discard()` (close it without caring about errors).
    """

    def __init__(self, path: str, fps: float):
        if fps <= 0:
            raise UsageError(f"fps must be positive, not {fps}")
        self.path = path
        self.fps = fps
        self.frames_written = 0
        self._size = None  # (H, W) of the first frame; all frames must match
        # The output's folder must exist: a mistyped -o path should not grow folders.
        self._tmp_path = temp_sibling(path, make_parents=False, fix="choose another -o path")
        self._held = hold(self._tmp_path)  # a second run into the same -o leaves it alone

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"a frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if self._size is None:
            self._size = frame.shape[:2]
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first frame's {self._size}")
        self._add(frame)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and move it to `path`."""
        try:
            if self.frames_written == 0:
                raise ValueError(f"no frames were written to '{self.path}'")
            self._finish()
            replace_into(self._tmp_path, os.path.abspath(self.path))
            self._release()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporary file; whatever was at `path` stays as it was."""
        try:
            self._discard()
        finally:
            discard(self._tmp_path)
            self._release()

    def _release(self) -> None:
        if self._held is not None:
            release(self._held)
            self._held = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # also KeyboardInterrupt: nothing half-written reaches `path`
            self.abort()

    def _add(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError


class Mp4Writer(_AtomicWriter):
    """Stream frames into an H.264 MP4 (libx264, yuv420p, constant quality `crf`); the same
    frames give the same bytes.

    yuv420p needs even sizes, so an odd height or width is padded by one pixel on the
    bottom or right edge (repeating the edge), and that is logged once per file.
    """

    def __init__(self, path: str, fps: float = 8, crf: int = 18):
        super().__init__(path, fps)
        self.crf = crf
        self._container = None
        self._stream = None

    def _open(self, height: int, width: int) -> None:
        import av

        self._container = av.open(self._tmp_path, mode="w")
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.height, self._stream.width = height, width
        self._stream.pix_fmt = "yuv420p"
        # x264's macroblock-tree rate control (its float SIMD path) made the same frames give
        # differing bytes in 6 of 15 single-threaded encodes in one process under load;
        # without it (or without asm) every encode matched: benchmarks/mp4_determinism.py.
        self._stream.options = {"crf": str(self.crf), "x264-params": "mbtree=0"}

    def _add(self, frame: np.ndarray) -> None:
        import av

        pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        if self._container is None:
            if pad_h or pad_w:
                logger.warning("'%s': frame size %dx%d is odd; padding to %dx%d for yuv420p",
                               self.path, self._size[1], self._size[0], frame.shape[1], frame.shape[0])
            self._open(*frame.shape[:2])
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        self._container.mux(self._stream.encode(video_frame))

    def _finish(self) -> None:
        self._container.mux(self._stream.encode(None))  # flush frames the encoder holds
        self._container.close()
        self._container = None

    def _discard(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            except Exception:  # the file is deleted next; its trailer does not matter
                pass


class GifWriter(_AtomicWriter):
    """Frames into an animated GIF (imageio + Pillow), looping forever.

    Pillow holds all frames until close (GIF needs a global pass), and it merges
    identical consecutive frames into one longer frame; `read_video` undoes that.
    """

    def __init__(self, path: str, fps: float = 8, crf: Optional[int] = None):
        super().__init__(path, fps)  # crf is accepted for a uniform interface, unused
        self._file = None

    def _add(self, frame: np.ndarray) -> None:
        import imageio.v3 as iio

        if self._file is None:
            self._file = iio.imopen(self._tmp_path, "w", plugin="pillow", extension=".gif")
        # GIF delays are whole centiseconds; rounding here keeps merged frames at
        # exact multiples of one delay, so reading recovers the frame count.
        delay_ms = 10 * max(1, round(100.0 / self.fps))
        self._file.write(frame, is_batch=False, duration=delay_ms, loop=0)

    def _finish(self) -> None:
        self._file.close()
        self._file = None

    def _discard(self) -> None:
        self._file = None  # Pillow has written nothing yet; frames are dropped with it
