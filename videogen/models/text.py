"""Prompt encoding with a T5 or UMT5 encoder (transformers) and its tokenizer.

Pretrained encoders (e.g. google/flan-t5-small, or Wan2.1's UMT5-XXL) load from a local
directory or the local Hugging Face cache, the class picked by the model_type of their
config.json (t5: T5EncoderModel, umt5: UMT5EncoderModel); nothing is downloaded at run
time unless VIDEOGEN_ALLOW_DOWNLOAD=1. Small models for tests and the embedded default
are built here: `build_tokenizer` trains a Unigram tokenizer on captions,
`build_text_encoder` makes a random T5 or UMT5 encoder.
A tokenizer built here reads text the way users type it (case folded, punctuation
dropped, spaces collapsed) and names the words it knows (`unknown_words`).

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
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (AutoTokenizer, PretrainedConfig, PreTrainedTokenizerFast, T5Config, T5EncoderModel,
                          UMT5Config, UMT5EncoderModel)

from videogen.errors import UsageError

# model_type (config.json) -> (config class, encoder class). UMT5 is T5 v1.1 with a
# relative position bias of its own in every layer (T5 shares the first layer's).
ENCODERS = {"t5": (T5Config, T5EncoderModel), "umt5": (UMT5Config, UMT5EncoderModel)}


@dataclass
class TextConfig:
    """T5 or UMT5 encoder + tokenizer. `pretrained` is a hub name or local directory; the
    sizes describe the encoder built when it is not set."""

    pretrained: Optional[str] = None
    tokenizer: Optional[str] = None  # the tokenizer's own directory (diffusers layout: tokenizer/); null: pretrained's
    model_type: str = "t5"  # t5 | umt5 (Wan2.1's text encoder): the encoder built, and the one pretrained holds
    vocab_size: Optional[int] = None  # embedding rows of an encoder built here; null: the tokenizer's size
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 128
    d_kv: int = 16
    max_length: int = 32

    def __post_init__(self):
        if self.model_type not in ENCODERS:
            raise UsageError(f"text.model_type must be {' or '.join(ENCODERS)}, not '{self.model_type}'")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise UsageError(f"text.vocab_size must be >= 1, or null for the tokenizer's size, not {self.vocab_size}")
        if self.tokenizer and not self.pretrained:
            raise UsageError("text.tokenizer is set without text.pretrained: set both (a pretrained encoder and its "
                             "tokenizer), or neither (a tokenizer is built from the captions)")

logger = logging.getLogger("videogen")

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"  # ids 0, 1, 2, as in every T5 vocabulary
# Characters always in the vocabulary, so unseen words split into pieces, not <unk>
# (capitals and punctuation never reach the model: see `normalise`).
ALPHABET = string.ascii_lowercase + string.digits
MIN_VOCAB = 128  # specials, "▁", the alphabet, and room for whole words
# A vocabulary this small is closed: the words it holds are the ones the model was trained
# on. A pretrained T5 (32k sentencepiece pieces) reads any word, so it gets no warning.
MAX_CLOSED_VOCAB = 1024


# --------------------------------------------------------------------------- building


def _subword_pieces(corpus: list, vocab_size: int) -> list:
    """(piece, log-prob) pairs from the tokenizers Unigram trainer, specials excluded."""
    tokenizer = normalise(Tokenizer(models.Unigram()))
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], unk_token=UNK,
        initial_alphabet=list(ALPHABET), show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    pieces = json.loads(tokenizer.to_str())["model"]["vocab"]  # the only API with scores
    # A "▁"-prefixed piece is a whole word (`vocabulary_words`), so no sub-word is one.
    return [(p, s) for p, s in pieces if p not in (PAD, EOS, UNK) and not _is_word_piece(p)]


def normalise(backend: Tokenizer) -> Tokenizer:
    """Give `backend` the normaliser and pre-tokenizer of the tokenizers built here.

    "A Yellow Triangle, moving left." then reads as "a yellow triangle moving left":
    NFKC folds compatibility forms (full-width letters), text is lowercased, runs of
    spaces collapse, and punctuation is split off and dropped, so that a trailing '.'
    or ',' adds no token the captions never had. Only for vocabularies trained here:
    a pretrained T5's sentencepiece vocabulary is cased.
    """
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Punctuation(behavior="removed"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
    ])
    return backend


def _unigram_vocab(corpus: list, vocab_size: int) -> list:
    """[(piece, score)]: specials, the corpus's frequent whole words, trained sub-words.

    The tokenizers Unigram trainer seeds its pieces from substrings that occur in two
    or more *distinct* words, ignoring how often each word occurs; on a small caption
    corpus it ends up near character level ("moving" -> 6 pieces), which wastes the
    text length budget. So whole words (up to half the budget, most frequent first)
    join the trained pieces, and the trained pieces' scores are shifted below every
    word's so that a known word is always one token.
    """
    reader = normalise(Tokenizer(models.Unigram()))
    counts = collections.Counter(word for text in corpus for word in _words(reader, text))
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


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 256) -> PreTrainedTokenizerFast:
    """A T5-style tokenizer (Unigram + Metaspace, <pad>=0 </s>=1 <unk>=2) trained on `corpus`.

    It has at most vocab_size pieces, appends </s> to every text (so "" encodes to
    [</s>]), has no <extra_id_*> sentinels (they only matter for T5's span-corruption
    pre-training), and carries the normaliser of `normalise`.
    """
    corpus = list(corpus)
    if not corpus:
        raise ValueError("build_tokenizer needs at least one caption")
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB}: the alphabet alone "
                         f"takes {len(ALPHABET) + 4} pieces")
    vocab = _unigram_vocab(corpus, vocab_size)
    backend = normalise(Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False)))
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)])
    # Not T5TokenizerFast: on load it rebuilds its own normaliser and pre-tokenizer
    # (ignoring ours), and T5TokenizerFast(vocab_file=...) builds a 4-token tokenizer.
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS,
                                   unk_token=UNK)


def build_text_encoder(cfg: TextConfig, vocab_size: int):
    """A randomly initialised T5EncoderModel or UMT5EncoderModel (text.model_type), T5 v1.1
    layout: gated-GELU feed-forward, 32 relative-position buckets up to distance 128."""
    config_class, encoder_class = ENCODERS[cfg.model_type]
    config = config_class(
        vocab_size=vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
        num_layers=cfg.num_layers, num_heads=cfg.num_heads, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
        pad_token_id=0, eos_token_id=1)
    return encoder_class(config).eval()


def encoder_vocab_size(cfg: TextConfig, tokenizer) -> int:
    """text.vocab_size, or the tokenizer's size when null; never fewer rows than its ids."""
    if cfg.vocab_size is None:
        return len(tokenizer)
    if cfg.vocab_size < len(tokenizer):
        raise UsageError(f"text.vocab_size ({cfg.vocab_size}) is below the tokenizer's {len(tokenizer)} pieces; "
                         "raise it or set text.vocab_size=null")
    return cfg.vocab_size


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
    """(tokenizer, frozen T5 or UMT5 encoder in eval mode) from a local directory or hub name.

    tokenizer_path defaults to path_or_name (a hub repo or a directory holding both).
    """
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, tokenizer_path or path_or_name,
                                 "tokenizer")
    encoder_class = ENCODERS[pretrained_model_type(path_or_name)][1]
    encoder = _from_pretrained(encoder_class.from_pretrained, path_or_name, "text encoder", dtype=dtype)
    encoder.to(device).eval().requires_grad_(False)
    return tokenizer, encoder


def pretrained_model_type(path_or_name: str) -> str:
    """The model_type in the config.json of a pretrained text encoder: one of ENCODERS."""
    config, _ = _from_pretrained(PretrainedConfig.get_config_dict, path_or_name, "text encoder")
    model_type = config.get("model_type")
    if model_type not in ENCODERS:
        raise UsageError(f"text encoder '{path_or_name}' is a {model_type or 'model without a model_type'} "
                         f"(its config.json); videogen loads {' and '.join(ENCODERS)} encoders: point "
                         "text.pretrained at one (e.g. Wan2.1's text_encoder/)")
    return model_type


# --------------------------------------------------------------------------- vocabulary


def _is_word_piece(piece: str) -> bool:
    return len(piece) > 1 and piece[0] == "▁" and piece[1:].isalnum()


def _words(backend: Tokenizer, text: str) -> list:
    """The words of `text` as `backend` reads them: 'A Yellow.' -> ['▁a', '▁yellow']."""
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    if backend.pre_tokenizer is None:
        return text.split()
    return [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)]


def vocabulary_words(tokenizer) -> Optional[list]:
    """The whole words of a closed vocabulary (one built here), or None for an open one.

    A whole word is a "▁"-prefixed piece of letters or digits that scores above every
    piece not so prefixed (the characters, bare "▁"): `_unigram_vocab` scores all
    sub-words below all words. (The shipped default, built before sub-words were kept
    off "▁", holds "▁st" and "▁b"; they score below that line.)
    """
    if len(tokenizer) > MAX_CLOSED_VOCAB:
        return None
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "Unigram":
        return None
    pieces = [(p, s) for p, s in model["vocab"] if p not in tokenizer.all_special_tokens]
    floor = max((s for p, s in pieces if not (p.startswith("▁") and len(p) > 1)), default=-math.inf)
    return [p[1:] for p, s in pieces if _is_word_piece(p) and s > floor]


def unknown_words(tokenizer, prompt: str) -> list:
    """Words of `prompt` that the tokenizer's closed vocabulary lacks (it can only split
    them into sub-word pieces), in prompt order, each once; [] for an open vocabulary.

    Case and punctuation count as the tokenizer reads them: with the default model
    'A Crimson Ball.' -> ['crimson', 'ball'], 'A Red Circle.' -> [].
    """
    known = vocabulary_words(tokenizer)
    if known is None:
        return []
    known = set(known)
    words = [piece[1:] if piece.startswith("▁") else piece
             for piece in _words(tokenizer.backend_tokenizer, prompt)]
    return list(dict.fromkeys(w for w in words if w and w not in known))


def describe_vocabulary(words: Iterable[str]) -> str:
    """`words` for a user, the shapes world's first: 'red, blue (colours), circle (shapes),
    moving left/right, standing still, a, on (other words)'."""
    from videogen.data.shapes import COLOURS, MOTIONS, SHAPES

    known = set(words)
    parts, used = [], set()
    for label, group in (("colours", COLOURS), ("shapes", SHAPES)):
        found = [w for w in group if w in known]
        if found:
            parts.append(f"{', '.join(found)} ({label})")
            used.update(found)
    ways = collections.defaultdict(list)  # "moving" -> ["left", "right"]
    for verb, way in (motion.split() for motion in MOTIONS):
        if {verb, way} <= known:
            ways[verb].append(way)
            used.update((verb, way))
    parts += [f"{verb} {'/'.join(group)}" for verb, group in ways.items()]
    rest = sorted(known - used)
    if rest:
        parts.append(f"{', '.join(rest)} (other words)")
    return ", ".join(parts)


def warn_unknown_words(tokenizer, prompts: Iterable[str]) -> None:
    """One warning per prompt that has words outside the tokenizer's closed vocabulary,
    naming them and the words the model knows; silent for known words in any case."""
    for prompt in dict.fromkeys(prompts):
        unknown = unknown_words(tokenizer, prompt)
        if unknown:
            logger.warning("unknown words: %s; this model knows: %s", ", ".join(map(repr, unknown)),
                           describe_vocabulary(vocabulary_words(tokenizer)))


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
