"""Decoding on a second thread while the next latent frame is sampled (StreamSession
`decode_ahead`, the default of `pipe(...)` and `videogen generate`): the same frames as
decoding in turn, the same prompt changes, the caller's threads back as they were."""

import threading

import numpy as np
import pytest
import torch

from videogen.data.shapes import render_clip
from videogen.errors import UsageError


@pytest.fixture
def one_thread():
    """Both ways on one thread each: a matmul's sum order, and so its last bit, follows the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def both(pipe, *args, **kwargs):
    turn = np.stack(list(pipe(*args, decode_ahead=False, **kwargs)))
    ahead = np.stack(list(pipe(*args, decode_ahead=True, **kwargs)))
    return turn, ahead


@pytest.mark.parametrize("frames", [1, 2, 5, 6, 13])
def test_the_same_frames_as_in_turn(pipe, one_thread, frames):
    turn, ahead = both(pipe, "a red circle moving right", frames, steps=2, seed=4)
    assert turn.shape == (frames, 32, 32, 3) and np.array_equal(turn, ahead)


def test_the_same_frames_with_a_schedule_and_given_frames(pipe, one_thread):
    given = render_clip("red", "circle", "moving right", frames=5, size=32, rng=np.random.default_rng(0))
    schedule = "0:a red circle moving right;5:a blue square moving left;9:a green triangle moving up"
    turn, ahead = both(pipe, "a red circle moving right", 14, steps=2, seed=1, prompt_schedule=schedule,
                       init_frames=given)
    assert turn.shape == (5 + 14, 32, 32, 3) and np.array_equal(turn, ahead)
    plain = np.stack(list(pipe("a red circle moving right", 14, steps=2, seed=1, init_frames=given)))
    assert not np.array_equal(plain[5 + 5:], turn[5 + 5:])  # the schedule did change the prompt


@pytest.mark.parametrize("at", [1, 4, 5, 6, 9])
def test_a_schedule_comes_in_where_set_prompt_after_that_frame_does(pipe, at):
    """The session's own schedule, known in advance, switches at the latent frame a caller's
    `set_prompt` after frame `at` switches at, decoding in turn."""
    session = pipe.stream("a red circle moving right", 13, steps=2, seed=2)
    by_hand = []
    for frame in session:
        by_hand.append(frame)
        if session.generated == at:
            session.set_prompt("a blue square moving left")
    scheduled = list(pipe.stream("a red circle moving right", 13, steps=2, seed=2,
                                 schedule=[(at, "a blue square moving left")]))
    assert np.array_equal(np.stack(by_hand), np.stack(scheduled))


def test_threads_come_back_and_no_decode_thread_outlives_the_caller(pipe):
    before = torch.get_num_threads()
    frames = pipe("a red circle moving right", 20, steps=1, decode_ahead=True)
    next(frames), next(frames), next(frames)
    assert any(t.name.startswith("videogen-decode") for t in threading.enumerate())
    frames.close()  # the caller stops early: the decode in flight ends, the thread with it
    assert not any(t.name.startswith("videogen-decode") for t in threading.enumerate())
    assert torch.get_num_threads() == before
    list(pipe("a red circle moving right", 6, steps=1, decode_ahead=True))
    assert torch.get_num_threads() == before


def test_a_schedule_out_of_order_is_refused(pipe):
    with pytest.raises(UsageError, match="must increase"):
        pipe.stream("a red circle", 8, schedule=[(5, "a blue square"), (5, "a green square")])
