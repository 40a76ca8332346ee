"""Continuation, image-to-video and live steering on a tiny model (design §10, issue 19)."""

import logging
import os

import numpy as np
import pytest

from videogen.cli import main
from videogen.data.shapes import render_clip
from videogen.data.video_io import open_writer, read_video
from videogen.errors import UsageError
from videogen.pipelines.pipeline import load_pipeline


def clip(frames, size=32, seed=0):
    return render_clip("red", "circle", "moving right", frames=frames, size=size, rng=np.random.default_rng(seed))


def test_continuation_starts_with_the_given_frames(pipe):
    given = clip(9)
    out = np.stack(list(pipe("a red circle moving right", 8, steps=1, init_frames=iter(given))))
    assert out.shape == (9 + 8, 32, 32, 3)
    assert np.array_equal(out[:9], given)  # same size: the given frames pass through unchanged
    new_only = np.stack(list(pipe("a red circle moving right", 8, steps=1, init_frames=given,
                                  include_init_frames=False)))
    assert np.array_equal(new_only, out[9:])


def test_image_to_video_takes_the_image_as_frame_0(pipe):
    image = clip(1)[0]
    out = np.stack(list(pipe("a red circle moving right", 6, steps=1, init_frames=[image])))
    assert out.shape == (7, 32, 32, 3) and np.array_equal(out[0], image)
    plain = np.stack(list(pipe("a red circle moving right", 7, steps=1)))
    assert not np.array_equal(out[1:], plain[1:])  # the image is context, not ignored


def test_other_sizes_are_resized_and_odd_lengths_trimmed_with_one_log_line(pipe, caplog):
    given = clip(11, size=48)[:, :, 4:44]  # 11 frames of 48x40: 9 used
    with caplog.at_level(logging.INFO, logger="videogen"):
        out = list(pipe("a red circle moving right", 4, steps=1, init_frames=given))
    assert len(out) == 9 + 4 and out[0].shape == (32, 32, 3)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("resized" in m for m in messages) == 1
    assert sum("last 2 given frame(s) are left out" in m for m in messages) == 1


def test_init_frames_of_a_h_x_w_model_are_resized_and_centre_cropped(wide_model):
    """A 16:9 clip continued by a 32x64 model: its frames come back as the 32x64 centre crop."""
    from videogen.data.datasets import clip_to_tensor
    from videogen.models.vae import frames_to_uint8

    wide = load_pipeline(wide_model)
    given = np.repeat(clip(5, size=64), 2, axis=2)[:, 14:50]  # 5 frames of 128x36, wider than 1:2
    out = np.stack(list(wide("a red circle moving right", 4, steps=1, init_frames=given)))
    assert out.shape == (5 + 4, 32, 64, 3)
    assert np.array_equal(out[:5], frames_to_uint8(clip_to_tensor(given, [32, 64])[None])[0])


def test_set_prompt_takes_effect_at_the_next_latent_frame(pipe):
    def run(switch_at):
        stream = pipe.stream("a red circle moving right", 13, seed=1, steps=1)
        frames = []
        for frame in stream:
            frames.append(frame)
            if len(frames) == switch_at:
                stream.set_prompt("a blue square moving left")
        return np.stack(frames)

    plain, switched = run(None), run(5)  # after frame 4 (the end of latent 1): latent 2 on
    assert np.array_equal(plain[:5], switched[:5])
    assert not np.array_equal(plain[5:], switched[5:])
    scheduled = np.stack(list(pipe("x", 13, seed=1, steps=1,
                                   prompt_schedule="0:a red circle moving right;5:a blue square moving left")))
    assert np.array_equal(scheduled, switched)
    # frame 4 is the last pixel of latent 1, so a change there also lands on latent 2
    at_4 = np.stack(list(pipe("x", 13, seed=1, steps=1,
                              prompt_schedule="0:a red circle moving right;4:a blue square moving left")))
    assert np.array_equal(at_4, switched)


def test_set_prompt_empty_is_a_usage_error(pipe):
    stream = pipe.stream("a red circle moving right", 5, steps=1)
    with pytest.raises(UsageError, match="empty"):
        stream.set_prompt("")
    with pytest.raises(UsageError, match="empty"):
        stream.set_prompt("   ")


def test_cli_continues_a_video_file(tiny_model, tmp_path):
    src = str(tmp_path / "clip.mp4")
    with open_writer(src, fps=8, crf=0) as writer:
        for frame in clip(13):
            writer.write(frame)
    out = tmp_path / "more.mp4"
    main(["generate", "a red circle moving right", "--init-video", src, "--frames", "8", "--steps", "1",
          "--model", tiny_model, "-o", str(out)])
    assert len(read_video(str(out))) == 13 + 8
    main(["generate", "a red circle moving right", "--init-video", src, "--frames", "8", "--steps", "1",
          "--model", tiny_model, "-o", str(out), "--no-init-frames"])
    assert len(read_video(str(out))) == 8


def run_bad(tiny_model, tmp_path, capsys, *args):
    """Run generate; it must exit 2 with one line and leave the existing output as it was."""
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an older video the user keeps")
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "a red circle moving right", "--frames", "4", "--steps", "1", "--model", tiny_model,
              "-o", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert out.read_bytes() == b"an older video the user keeps"
    assert sorted(os.listdir(tmp_path)) == sorted(p for p in os.listdir(tmp_path) if ".tmp" not in p)
    return err


def test_unreadable_init_video(tiny_model, tmp_path, capsys):
    src = str(tmp_path / "good.mp4")
    with open_writer(src, fps=8) as writer:
        for frame in clip(9):
            writer.write(frame)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(src, "rb").read()[:300])
    assert "not a readable video" in run_bad(tiny_model, tmp_path, capsys, "--init-video", str(truncated))


def test_empty_init_video(tiny_model, tmp_path, capsys):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "is empty" in run_bad(tiny_model, tmp_path, capsys, "--init-video", str(tmp_path / "empty.mp4"))


def test_non_video_init_file(tiny_model, tmp_path, capsys):
    (tmp_path / "notes.mp4").write_text("these are notes, not a video\n" * 20)
    assert "not a readable video" in run_bad(tiny_model, tmp_path, capsys, "--init-video", str(tmp_path / "notes.mp4"))


def test_missing_init_video(tiny_model, tmp_path, capsys):
    assert "not found" in run_bad(tiny_model, tmp_path, capsys, "--init-video", str(tmp_path / "none.mp4"))


def test_unsupported_image_format(tiny_model, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(clip(1)[0]).save(tmp_path / "first.bmp")
    assert "unsupported image format '.bmp'" in run_bad(tiny_model, tmp_path, capsys,
                                                         "--init-image", str(tmp_path / "first.bmp"))


def test_init_video_with_init_image(tiny_model, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(clip(1)[0]).save(tmp_path / "first.png")
    err = run_bad(tiny_model, tmp_path, capsys, "--init-video", str(tmp_path / "x.mp4"),
                  "--init-image", str(tmp_path / "first.png"))
    assert "not both" in err


def test_cli_image_to_video(tiny_model, tmp_path):
    from PIL import Image

    Image.fromarray(clip(1)[0]).save(tmp_path / "first.png")
    out = tmp_path / "i2v.mp4"
    main(["generate", "a red circle moving right", "--init-image", str(tmp_path / "first.png"), "--frames", "4",
          "--steps", "1", "--model", tiny_model, "-o", str(out)])
    assert len(read_video(str(out))) == 1 + 4


def test_a_fork_goes_on_exactly_where_the_session_is(pipe):
    stream = pipe.stream("a red circle moving right", 13, seed=2, steps=1)
    it = iter(stream)
    head = [next(it) for _ in range(3)]  # mid-latent: two frames of latent 1 are still buffered
    fork = stream.fork()
    rest, forked = list(it), list(fork)
    assert len(rest) == len(forked) == 10
    assert all(np.array_equal(a, b) for a, b in zip(rest, forked))
    assert np.array_equal(np.stack(head + rest), np.stack(list(pipe("a red circle moving right", 13, seed=2, steps=1))))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_a_session_refuses_guidance_that_cannot_work(pipe, value):
    """The session checks what the CLI checks before loading: the web page relies on it."""
    with pytest.raises(UsageError, match="--guidance must be a finite number"):
        pipe.stream("a red circle moving right", 8, guidance=value)
