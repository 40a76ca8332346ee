"""Prompt encoding with a T5 encoder (transformers) and its tokenizer.

Pretrained T5s (e.g. google/flan-t5-small) load from a local directory or the local
Hugging Face cache; nothing is downloaded at run time unless VIDEOGEN_ALLOW_DOWNLOAD=1.
Small models for tests and the embedded default are built here: `build_tokenizer`
trains a Unigram tokenizer on captions, `build_text_encoder` makes a random T5 encoder.

Shapes: B prompts, L tokens, Dt text width.
"""

from __future__ import annotations

from dataclasses import dataclass

import collections
import json
import logging
import math
import os
import string
from typing import Iterable, Optional

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

from videogen.errors import UsageError


@dataclass
class TextConfig:
    """T5 encoder + tokenizer. `pretrained` is a hub name or local directory."""

    pretrained: Optional[str] = None
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 128
    d_kv: int = 16
    max_length: int = 32

logger = logging.getLogger("videogen")

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"  # ids 0, 1, 2, as in every T5 vocabulary
# Characters always in the vocabulary, so unseen words split into pieces, not <unk>.
ALPHABET = string.ascii_letters + string.digits + string.punctuation
MIN_VOCAB = 128  # specials, "▁", the alphabet, and room for whole words


# --------------------------------------------------------------------------- building


def _subword_pieces(corpus: list, vocab_size: int) -> list:
    """(piece, log-prob) pairs from the tokenizers Unigram trainer, specials excluded."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = _t5_pre_tokenizer()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], unk_token=UNK,
        initial_alphabet=list(ALPHABET), show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    pieces = json.loads(tokenizer.to_str())["model"]["vocab"]  # the only API with scores
    return [(p, s) for p, s in pieces if p not in (PAD, EOS, UNK)]


def _t5_pre_tokenizer():
    # Exactly what T5TokenizerFast builds on load, so from_pretrained gives the same ids.
    return pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
    ])


def _unigram_vocab(corpus: list, vocab_size: int) -> list:
    """[(piece, score)]: specials, the corpus's frequent whole words, trained sub-words.

    The tokenizers Unigram trainer seeds its pieces from substrings that occur in two
    or more *distinct* words, ignoring how often each word occurs; on a small caption
    corpus it ends up near character level ("moving" -> 6 pieces), which wastes the
    text length budget. So whole words (up to half the budget, most frequent first)
    join the trained pieces, and the trained pieces' scores are shifted below every
    word's so that a known word is always one token.
    """
    counts = collections.Counter("▁" + word for text in corpus for word in text.split())
    words = [w for w, _ in counts.most_common((vocab_size - 3) // 2)]
    total = sum(counts.values())
    word_scores = {w: math.log(counts[w] / total) for w in words}
    # The Unigram trainer is not deterministic: from one build to the next its pieces come
    # in another order (other ids) with scores ~0.01 apart, so an unseen word became other
    # ids in every run (two identical trainings on real captions differed by 5e-3 in the
    # weights). Its pieces are kept, sorted, and scored by how often they occur in the words.
    pieces = sorted({p for p, _ in _subword_pieces(corpus, vocab_size - len(words))} - set(word_scores))
    subwords = [(p, _piece_log_frequency(p, counts, total)) for p in pieces]
    if subwords:
        # Any split of a word into 2+ pieces then scores below the lowest word score.
        shift = min(word_scores.values(), default=0.0) - 1.0 - max(s for _, s in subwords)
        subwords = [(p, s + shift) for p, s in subwords]
    specials = [(PAD, 0.0), (EOS, 0.0), (UNK, 0.0)]
    return specials + list(word_scores.items()) + subwords


def _piece_log_frequency(piece: str, counts: collections.Counter, total: int) -> float:
    """log of the piece's occurrences in the corpus's words per word (+1: never -inf)."""
    hits = sum(n * word.count(piece) for word, n in counts.items())
    return math.log((hits + 1) / total)


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 256) -> T5TokenizerFast:
    """A T5 tokenizer (Unigram + Metaspace, <pad>=0 </s>=1 <unk>=2) trained on `corpus`.

    It has at most vocab_size pieces, appends </s> to every text (so "" encodes to
    [</s>]) and has no <extra_id_*> sentinels, which only matter for T5's
    span-corruption pre-training.
    """
    corpus = list(corpus)
    if not corpus:
        raise ValueError("build_tokenizer needs at least one caption")
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB}: the alphabet alone "
                         f"takes {len(ALPHABET) + 4} pieces")
    vocab = _unigram_vocab(corpus, vocab_size)
    backend = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = _t5_pre_tokenizer()
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)])
    # Not T5TokenizerFast(vocab_file=...): that silently builds a 4-token tokenizer.
    return T5TokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS,
                           unk_token=UNK, extra_ids=0)


def build_text_encoder(cfg: TextConfig, vocab_size: int) -> T5EncoderModel:
    """A randomly initialised T5 encoder (T5 v1.1 layout: gated-GELU feed-forward)."""
    config = T5Config(
        vocab_size=vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
        num_layers=cfg.num_layers, num_heads=cfg.num_heads, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
        pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(config).eval()


# --------------------------------------------------------------------------- loading


def _is_local_path(name: str) -> bool:
    """Hub names look like 'org/model' or 'model'; anything else is a local path."""
    return os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1


def _from_pretrained(loader, name: str, what: str, **kwargs):
    if _is_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise UsageError(f"{what} directory '{name}' not found; pass an existing directory "
                         "or a Hugging Face model name")
    allow_download = os.environ.get("VIDEOGEN_ALLOW_DOWNLOAD") == "1"
    try:
        return loader(os.path.expanduser(name), local_files_only=not allow_download, **kwargs)
    except (OSError, ValueError) as err:  # not in the cache, or the directory lacks the files
        hint = "" if allow_download else " (not downloaded: set VIDEOGEN_ALLOW_DOWNLOAD=1 to allow it)"
        raise UsageError(f"cannot load {what} from '{name}'{hint}: "
                         f"{str(err).splitlines()[0]}") from None


def load_text_components(
    path_or_name: str,
    *,
    tokenizer_path: Optional[str] = None,
    device="cpu",
    dtype: torch.dtype = torch.float32,
):
    """(tokenizer, frozen T5 encoder in eval mode) from a local directory or hub name.

    tokenizer_path defaults to path_or_name (a hub repo or a directory holding both).
    """
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, tokenizer_path or path_or_name,
                                 "tokenizer")
    encoder = _from_pretrained(T5EncoderModel.from_pretrained, path_or_name, "text encoder",
                               dtype=dtype)
    encoder.to(device).eval().requires_grad_(False)
    return tokenizer, encoder


# --------------------------------------------------------------------------- encoding


def _warn_if_truncated(tokenizer, prompts: list, max_length: int) -> None:
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    for prompt, length in zip(prompts, lengths):
        if length > max_length:  # its start names it; a 10,000-character prompt echoed would bury the log
            shown = prompt if len(prompt) <= 80 else prompt[:77].rstrip() + "..."
            logger.warning("prompt '%s' is %d tokens; keeping the first %d (text.max_length)",
                           shown, length, max_length)


def encode_prompts(tokenizer, encoder, prompts: list, max_length: int, device=None):
    """Encode prompts to (emb (B, L, Dt), mask (B, L) bool), L = longest prompt <= max_length.

    Every prompt ends in </s>, so "" (the unconditional prompt for guidance) is one
    token. Padded positions of emb are zero, so they are the same in any batch.
    """
    if isinstance(prompts, str):
        raise TypeError("encode_prompts takes a list of prompts, not one string")
    device = device if device is not None else encoder.device
    _warn_if_truncated(tokenizer, prompts, max_length)
    tokens = tokenizer(prompts, padding="longest", truncation=True, max_length=max_length,
                       return_tensors="pt")
    ids = tokens["input_ids"].to(device)
    mask = tokens["attention_mask"].to(device).bool()
    with torch.no_grad():
        emb = encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    return emb * mask[..., None].to(emb.dtype), mask
