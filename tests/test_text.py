"""Tokenizer training and normalising, unknown words, T5 encoder save/load, and prompt
batching."""

import itertools
import logging
import pathlib
import string

import pytest
import torch

from videogen.models.text import TextConfig
from videogen.errors import UsageError
from videogen.models.text import (build_text_encoder, build_tokenizer, encode_prompts,
                           load_text_components, unknown_words, vocabulary_words,
                           warn_unknown_words)

COLOURS = ["red", "yellow", "green", "cyan", "blue", "purple", "white"]
SHAPES = ["circle", "square", "triangle"]
MOTIONS = ["moving left", "moving right", "moving up", "moving down", "standing still"]
CORPUS = [f"a {c} {s} {m}" for c, s, m in itertools.product(COLOURS, SHAPES, MOTIONS)]
PROMPTS = ["a red circle moving left", "", "a blue square standing still on a black background"]
SHAPES_PROMPTS = pathlib.Path(__file__).parents[1] / "data" / "prompts_shapes.txt"


def typed_variants(prompt: str) -> list:
    """`prompt` as users type it: UPPER case, Title Case, a trailing '.', '!' or ','."""
    return [prompt.upper(), prompt.title()] + [prompt + mark for mark in ".!,"]


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
    # the normaliser survives the load (a T5Tokenizer class would rebuild its own, cased)
    assert type(loaded_tok).__name__ in ("PreTrainedTokenizerFast", "TokenizersBackend")
    typed = loaded_tok("A Purple TRIANGLE, moving up.").input_ids
    assert typed == tokenizer("a purple triangle moving up").input_ids
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


def test_typed_prompts_read_as_their_lowercase_form():
    """Case, trailing punctuation and extra spaces change no id, for every committed prompt."""
    from videogen.pipelines.pipeline import shapes_corpus

    tokenizer = build_tokenizer(shapes_corpus())
    prompts = SHAPES_PROMPTS.read_text().split("\n")
    prompts = [p for p in prompts if p.strip()]
    assert len(prompts) == 69
    for prompt in prompts:
        ids = tokenizer(prompt).input_ids
        assert tokenizer.unk_token_id not in ids and len(ids) == len(prompt.split()) + 1, prompt
        for typed in typed_variants(prompt) + ["  " + prompt.replace(" ", "   ") + " "]:
            assert tokenizer(typed).input_ids == ids, typed
    # "circle," in a caption is the word "circle", not a piece of its own
    assert tokenizer("red circle, moving left").input_ids == tokenizer("red circle moving left").input_ids
    assert tokenizer("ＲＥＤ circle").input_ids == tokenizer("red circle").input_ids  # NFKC: full-width


def test_vocabulary_and_unknown_words(components, caplog):
    tokenizer, _, _ = components
    corpus_words = {w for text in CORPUS for w in text.split()}
    assert set(vocabulary_words(tokenizer)) == corpus_words
    for typed in typed_variants("a purple triangle moving up") + ["Red, CIRCLE... standing still!"]:
        assert unknown_words(tokenizer, typed) == [], typed
    assert unknown_words(tokenizer, "A Crimson BALL, moving up; a crimson ball.") == ["crimson", "ball"]
    with caplog.at_level(logging.WARNING, logger="videogen"):
        warn_unknown_words(tokenizer, ["A Red Circle.", "a crimson ball", "a crimson ball"])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines  # once per prompt, none for known words
    assert lines[0].startswith("unknown words: 'crimson', 'ball'; this model knows: red, yellow, green")
    assert "circle, square, triangle (shapes), moving left/right/up/down, standing still" in lines[0]


def test_pretrained_t5_tokenizer_stays_cased_and_open(tmp_path):
    """A real T5's sentencepiece vocabulary is cased and open: loading keeps its case, and
    no word is 'unknown' to it. (A stand-in: a cased Unigram over 1,100 pieces.)"""
    from tokenizers import Tokenizer, models
    from transformers import T5TokenizerFast

    vocab = ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), ("▁Red", -1.0), ("▁red", -1.0)]
             + [(c, -3.0) for c in string.ascii_letters] + [(f"▁w{i}", -4.0) for i in range(1100)])
    backend = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    T5TokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                    extra_ids=0).save_pretrained(tmp_path)
    build_text_encoder(TextConfig(), vocab_size=len(vocab)).save_pretrained(tmp_path)
    tokenizer, _ = load_text_components(str(tmp_path))
    red, lower = tokenizer("Red red").input_ids[:2]
    assert red != lower
    assert vocabulary_words(tokenizer) is None and unknown_words(tokenizer, "a crimson ball") == []


# --------------------------------------------------------------------------- UMT5 (Wan2.1's encoder)
UMT5 = ["text.model_type=umt5", "text.d_model=32", "text.num_layers=2", "text.num_heads=2", "text.d_ff=64",
        "text.d_kv=16"]


@pytest.fixture(scope="module")
def umt5_dirs(tmp_path_factory):
    """A tiny random UMT5 encoder and a tokenizer built here, saved as Wan2.1's diffusers
    layout keeps them: text_encoder/ and tokenizer/ apart."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(CORPUS, vocab_size=256)
    encoder = build_text_encoder(TextConfig(model_type="umt5", num_layers=2), vocab_size=len(tokenizer))
    root = tmp_path_factory.mktemp("umt5")
    tokenizer.save_pretrained(root / "tokenizer")
    encoder.save_pretrained(root / "text_encoder")
    return tokenizer, encoder, root


def test_a_umt5_encoder_loads_by_its_model_type_and_encodes(umt5_dirs):
    from transformers import UMT5EncoderModel

    tokenizer, encoder, root = umt5_dirs
    assert type(encoder) is UMT5EncoderModel
    # UMT5: every layer has its own relative position bias (T5: the first layer's, shared)
    assert all(block.layer[0].SelfAttention.has_relative_attention_bias for block in encoder.encoder.block)
    loaded_tok, loaded_enc = load_text_components(str(root / "text_encoder"), tokenizer_path=str(root / "tokenizer"))
    assert type(loaded_enc) is UMT5EncoderModel and not loaded_enc.training
    emb, mask = encode_prompts(tokenizer, encoder, PROMPTS, max_length=32)
    emb2, mask2 = encode_prompts(loaded_tok, loaded_enc, PROMPTS, max_length=32)
    assert torch.equal(mask, mask2) and torch.equal(emb, emb2)
    assert emb.shape == (3, mask.sum(1).max(), 64) and torch.all(emb[~mask] == 0)
    alone, _ = encode_prompts(loaded_tok, loaded_enc, PROMPTS[:1], max_length=32)
    torch.testing.assert_close(emb[0, :alone.shape[1]], alone[0], atol=1e-5, rtol=1e-5)


def test_an_encoder_of_another_model_type_is_one_line_naming_the_fix(umt5_dirs, tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    with pytest.raises(UsageError, match=r"is a bert \(its config.json\); videogen loads t5 and umt5 encoders: "
                                         "point text.pretrained at one") as err:
        load_text_components(str(tmp_path), tokenizer_path=str(umt5_dirs[2] / "tokenizer"))
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="text.model_type must be t5 or umt5, not 'bert'"):
        TextConfig(model_type="bert")


def test_build_components_loads_a_umt5_directory_the_way_the_pipeline_does(umt5_dirs):
    from transformers import UMT5EncoderModel

    from videogen.pipelines.pipeline import build_components
    from videogen.training.config import load_config

    _, encoder, root = umt5_dirs
    paths = [f"text.pretrained={root / 'text_encoder'}", f"text.tokenizer={root / 'tokenizer'}"]
    parts = build_components(load_config("tiny", paths + ["text.model_type=umt5"]))
    assert type(parts["text_encoder"]) is UMT5EncoderModel
    assert parts["transformer"].config.text_dim == encoder.config.d_model == 64
    with pytest.raises(UsageError, match="text.model_type is t5, but the encoder in .* is a umt5: set "
                                         "text.model_type=umt5"):
        build_components(load_config("tiny", paths))
    with pytest.raises(UsageError, match="text.tokenizer is set without text.pretrained"):
        load_config("tiny", [f"text.tokenizer={root / 'tokenizer'}"])


def test_init_model_builds_a_umt5_pipeline_that_loads_and_generates(tmp_path):
    from transformers import UMT5EncoderModel

    from videogen.cli import main
    from videogen.pipelines.pipeline import load_pipeline
    from videogen.training.components import init_pipeline

    main(["init-model", str(tmp_path / "pipe"), "--config", "tiny", *UMT5, "text.vocab_size=300"])
    pipe = load_pipeline(str(tmp_path / "pipe"))
    assert type(pipe.text_encoder) is UMT5EncoderModel
    assert pipe.text_encoder.config.vocab_size == 300 and pipe.text_encoder.config.num_layers == 2
    frames = list(pipe("a red circle moving right", 5, seed=0))
    assert len(frames) == 5 and frames[0].shape == (32, 32, 3)
    with pytest.raises(UsageError, match=r"text.vocab_size \(50\) is below the tokenizer's 75 pieces"):
        init_pipeline(str(tmp_path / "small"), config="tiny", overrides=UMT5 + ["text.vocab_size=50"])
