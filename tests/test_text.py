"""Tokenizer training, T5 encoder save/load, and prompt batching."""

import itertools
import logging

import pytest
import torch

from videogen.models.text import TextConfig
from videogen.errors import UsageError
from videogen.models.text import (build_text_encoder, build_tokenizer, encode_prompts,
                           load_text_components)

COLOURS = ["red", "yellow", "green", "cyan", "blue", "purple", "white"]
SHAPES = ["circle", "square", "triangle"]
MOTIONS = ["moving left", "moving right", "moving up", "moving down", "standing still"]
CORPUS = [f"a {c} {s} {m}" for c, s, m in itertools.product(COLOURS, SHAPES, MOTIONS)]
PROMPTS = ["a red circle moving left", "", "a blue square standing still on a black background"]


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    """A tokenizer + random encoder, saved to and reloaded from one directory."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(CORPUS, vocab_size=256)
    encoder = build_text_encoder(TextConfig(), vocab_size=len(tokenizer))
    path = tmp_path_factory.mktemp("text")
    tokenizer.save_pretrained(path)
    encoder.save_pretrained(path)
    return tokenizer, encoder, str(path)


def test_tokenizer_special_ids_and_known_words(components):
    tokenizer, _, _ = components
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert len(tokenizer) <= 256  # no 100 <extra_id_*> sentinels on top
    assert tokenizer("").input_ids == [1]
    ids = tokenizer("a purple triangle moving up").input_ids
    # every corpus word is one piece, followed by </s>
    assert tokenizer.convert_ids_to_tokens(ids) == ["▁a", "▁purple", "▁triangle", "▁moving", "▁up", "</s>"]
    # an unseen word splits into known pieces instead of <unk>
    assert tokenizer.unk_token_id not in tokenizer("a magenta hexagon zooming").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a purple triangle moving up"


def test_save_load_round_trip(components):
    tokenizer, encoder, path = components
    loaded_tok, loaded_enc = load_text_components(path)
    texts = CORPUS[:5] + PROMPTS + ["unseen Words, with CAPS!"]
    assert loaded_tok(texts).input_ids == tokenizer(texts).input_ids
    assert not loaded_enc.training
    assert not any(p.requires_grad for p in loaded_enc.parameters())
    emb, mask = encode_prompts(tokenizer, encoder, PROMPTS, max_length=32)
    emb2, mask2 = encode_prompts(loaded_tok, loaded_enc, PROMPTS, max_length=32)
    assert torch.equal(mask, mask2)
    assert torch.equal(emb, emb2)


def test_mask_lengths_and_batching(components):
    tokenizer, encoder, _ = components
    emb, mask = encode_prompts(tokenizer, encoder, PROMPTS, max_length=32)
    lengths = [len(tokenizer(p).input_ids) for p in PROMPTS]
    assert lengths[1] == 1  # the empty prompt is just </s>
    assert emb.shape == (3, max(lengths), TextConfig().d_model)
    assert mask.dtype == torch.bool
    assert mask.sum(1).tolist() == lengths
    assert torch.all(emb[~mask] == 0)
    # a prompt encodes the same alone and padded in a batch
    for i, prompt in enumerate(PROMPTS):
        alone, _ = encode_prompts(tokenizer, encoder, [prompt], max_length=32)
        torch.testing.assert_close(emb[i, : lengths[i]], alone[0], atol=1e-5, rtol=1e-5)


def test_truncation_keeps_eos_and_logs(components, caplog):
    tokenizer, encoder, _ = components
    long_prompt = " ".join(CORPUS[:4])
    with caplog.at_level(logging.WARNING, logger="videogen"):
        emb, mask = encode_prompts(tokenizer, encoder, [long_prompt, "a red circle"], max_length=8)
    assert emb.shape[1] == 8 and mask[0].all()
    ids = tokenizer([long_prompt], truncation=True, max_length=8).input_ids[0]
    assert ids[-1] == tokenizer.eos_token_id
    assert any("keeping the first 8" in r.getMessage() for r in caplog.records)


def test_missing_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_text_components(str(tmp_path / "no_such_model"))
    with pytest.raises(UsageError, match="cannot load"):
        load_text_components(str(tmp_path))  # exists but holds no model
