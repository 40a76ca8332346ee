"""Contrastive guidance at the start of a video: the first `contrast_frames` latent frames of
a prompt naming a motion are guided away from the prompt with the opposite motion (the
pipeline's `contrast` words), then the stream goes on under plain guidance from exactly the
state a plain stream reaches on those frames."""

import numpy as np
import pytest
import torch

from videogen.diffusion.sampler import StreamingSampler
from videogen.errors import UsageError
from videogen.pipelines.stream import contrast_prompt, sampler_settings

OPPOSITES = {"left": "right", "right": "left", "up": "down", "down": "up"}
PROMPT = "a red circle moving left"


def test_contrast_prompt_swaps_each_named_word_as_typed():
    assert contrast_prompt("a red circle moving left", OPPOSITES) == "a red circle moving right"
    assert contrast_prompt("A Red Circle Moving LEFT.", OPPOSITES) == "A Red Circle Moving right."
    assert contrast_prompt("up, then down", OPPOSITES) == "down, then up"  # each word once, not back again
    assert contrast_prompt("a blue square standing still", OPPOSITES) == ""  # nothing to contrast: empty
    assert contrast_prompt("an upright square", OPPOSITES) == ""  # whole words only
    assert contrast_prompt("a red circle moving left", {}) == ""
    assert contrast_prompt("moving Left", {"Left": "right"}) == "moving right"  # the table's case is folded too


@pytest.fixture
def contrast_pipe(pipe):
    """The tiny pipeline with the shapes world's contrast words over 2 latent frames, as the
    default model ships."""
    before = pipe.config.get("contrast"), pipe.config.get("contrast_frames")
    pipe.register_to_config(contrast=OPPOSITES, contrast_frames=2)
    yield pipe
    pipe.register_to_config(contrast=before[0], contrast_frames=before[1])


def _negative_row(session):
    return session.sampler.ctx.pooled[1]


def _pooled(pipe, prompt):
    return pipe.encode(prompt, False).pooled[0]


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def flat_state(state):
    return [x for s in state for x in list(vars(s.mixer).values()) + [s.ffn_prev]]


def test_latent_frame_1_is_guided_from_the_contrast_prompt_the_others_from_the_empty_one(contrast_pipe):
    pipe = contrast_pipe
    session = pipe.stream(PROMPT, None, seed=0)
    _close(_negative_row(session), _pooled(pipe, ""))  # frame 0, a still image: plain
    session._sample_latent()
    _close(_negative_row(session), _pooled(pipe, "a red circle moving right"))  # latent frame 1
    assert (_negative_row(session) - _pooled(pipe, "")).abs().max() > 1e-3
    session._sample_latent()  # the contrast window ends
    _close(_negative_row(session), _pooled(pipe, ""))
    still = pipe.stream("a red circle standing still", None, seed=0)  # nothing to contrast
    still._sample_latent()
    _close(_negative_row(still), _pooled(pipe, ""))


def _primed(pipe, session, latents, noise, negative):
    sampler = StreamingSampler(pipe.transformer, pipe.encode(PROMPT, True, negative), session.sampler.latent_shape,
                               sampler_settings(pipe.config, None, None, None), pipe.scheduler,
                               torch.Generator().manual_seed(0))
    sampler.prime(latents, noise=noise)
    return sampler


def _assert_states_close(a, b):
    assert [s.frames for s in a] == [s.frames for s in b]
    for x, y in zip(flat_state(a), flat_state(b)):
        assert x.shape == y.shape and (x - y).abs().max().item() <= 1e-5


def test_in_and_after_the_contrast_the_state_is_that_of_a_stream_guided_so_all_along(contrast_pipe):
    """The central invariant's form here: at each switch of the negative prompt the state
    equals that of a stream guided from the new negative all along, primed with the same
    latent frames and commit noise, to 1e-5 (streaming == parallel holds for that one)."""
    pipe = contrast_pipe
    session = pipe.stream(PROMPT, None, seed=0)
    first = session._sample_latent()[:, :, None]
    noise = session.sampler.ring[-1][1][:, :, None]
    _assert_states_close(_primed(pipe, session, first, noise, "a red circle moving right").state,
                         session.sampler.state)
    second = session._sample_latent()[:, :, None]
    noise = torch.stack([n for _, n in session.sampler.ring], dim=2)
    _assert_states_close(_primed(pipe, session, torch.cat([first, second], dim=2), noise, "").state,
                         session.sampler.state)
    assert session.sampler.frames == 2


def test_the_contrast_changes_the_start_and_a_negative_prompt_or_init_frames_turn_it_off(contrast_pipe):
    pipe = contrast_pipe

    def video(**kw):
        return np.stack(list(pipe(PROMPT, 9, seed=3, **kw)))

    contrasted, plain = video(), video(negative_prompt="")
    assert np.abs(contrasted.astype(int) - plain.astype(int)).max() > 0
    pipe.register_to_config(contrast_frames=0)
    np.testing.assert_array_equal(plain, video())  # contrast_frames 0: plain guidance
    pipe.register_to_config(contrast_frames=2)
    given = pipe.stream(PROMPT, 5, seed=0, init_frames=[plain[0]])
    _close(_negative_row(given), _pooled(pipe, ""))  # a given start is not re-guided
    short = pipe.stream(PROMPT, 5, seed=0, ring=1)  # too short a ring to re-commit the start: plain
    short._sample_latent()
    _close(_negative_row(short), _pooled(pipe, ""))
    fixed = pipe.stream(PROMPT, 5, seed=0, negative_prompt="a blue square")
    _close(_negative_row(fixed), _pooled(pipe, "a blue square"))
    # unguided there is no negative row: a negative prompt changes nothing
    np.testing.assert_array_equal(video(guidance=1.0), video(guidance=1.0, negative_prompt="a blue square"))


def test_a_prompt_switch_keeps_the_given_negative_prompt(contrast_pipe):
    pipe = contrast_pipe
    session = pipe.stream(PROMPT, 9, seed=0, schedule=[(5, "a blue square moving up")],
                          negative_prompt="a green triangle")
    assert len(list(session)) == 9
    _close(_negative_row(session), _pooled(pipe, "a green triangle"))
    early = pipe.stream(PROMPT, 9, seed=0)
    early._sample_latent()
    early.set_prompt("a blue square moving up")  # within the contrast window: the new prompt's own
    early._apply_pending()
    _close(_negative_row(early), _pooled(pipe, "a blue square moving down"))
    early._sample_latent()
    _close(_negative_row(early), _pooled(pipe, ""))


def test_a_negative_prompt_that_is_not_text_is_refused(contrast_pipe):
    with pytest.raises(UsageError, match="negative prompt must be text"):
        contrast_pipe.stream(PROMPT, 5, negative_prompt=3)
