"""The embedded default model: package data in the pipeline layout, safetensors only, at most
50 MB (its distilled student beside it), loaded when no --model is given, and drawing the
prompt's object."""

import json
import logging
import os
import pathlib
import subprocess
import sys

import pytest

from videogen.pipelines.pipeline import COMPONENTS, DEFAULT_MODEL_DIR

SHIPPED = os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, "model_index.json"))
ENV = dict(os.environ, OMP_NUM_THREADS="1")
ROOT = pathlib.Path(__file__).parents[1]
# Ids of the committed prompts under the shipped tokenizer before it got its normaliser.
IDS_BEFORE = ROOT / "tests" / "fixtures" / "default_prompt_ids.json"


def test_without_a_shipped_model_generate_names_the_fix(tmp_path, monkeypatch):
    """An install without the default (e.g. a source tree before training) fails cleanly."""
    import videogen.pipelines.pipeline as pipeline
    from videogen.errors import UsageError

    monkeypatch.setattr(pipeline, "DEFAULT_MODEL_DIR", str(tmp_path / "absent"))
    with pytest.raises(UsageError, match="--model DIR"):
        pipeline.load_pipeline()


@pytest.mark.skipif(not SHIPPED, reason="videogen/default_model is not built yet (scripts/train_default.sh)")
def test_shipped_layout_and_size():
    files = [os.path.join(root, name) for root, _, names in os.walk(DEFAULT_MODEL_DIR) for name in names]
    assert sum(os.path.getsize(f) for f in files) <= 50 * 2**20
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
    for component in COMPONENTS:
        assert os.path.isdir(os.path.join(DEFAULT_MODEL_DIR, component)), component
    weights = [f for f in files if f.endswith(".safetensors")]
    assert {os.path.basename(os.path.dirname(f)) for f in weights} == {"transformer", "vae", "text_encoder", "fast"}


@pytest.mark.skipif(not SHIPPED, reason="videogen/default_model is not built yet (scripts/train_default.sh)")
def test_the_distilled_student_loads_by_name_with_its_own_settings(tmp_path):
    """`--model default-fast`: the default pipeline with the 1-step student (2 steps for the
    first latent frame, no CFG) of `videogen distill`, its own weights; it draws the prompt."""
    import torch

    from videogen.data.video_io import read_video
    from videogen.evaluation.shapes_scorer import score_video
    from videogen.pipelines.pipeline import load_pipeline

    teacher, student = load_pipeline(), load_pipeline("default-fast")
    assert (teacher.config.steps, teacher.config.guidance) == (8, 3.0)
    assert (student.config.steps, student.config.guidance, student.config.first_steps) == (1, 1.0, 2)
    assert student.config.context_noise == teacher.config.context_noise
    pairs = zip(student.transformer.state_dict().values(), teacher.transformer.state_dict().values())
    assert any(not torch.equal(a, b) for a, b in pairs)
    out = tmp_path / "fast.mp4"
    prompt = "a red circle moving right"
    done = subprocess.run([sys.executable, "-m", "videogen", "generate", prompt, "--model", "default-fast",
                           "--frames", "33", "-o", str(out)], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = score_video(read_video(str(out)), prompt)
    assert row["presence"] >= 0.9 and row["colour_ok"] and row["shape_ok"] and row["direction_ok"], row


@pytest.fixture(scope="module")
def shipped_tokenizer():
    from videogen.pipelines.pipeline import load_pipeline

    return load_pipeline().tokenizer  # as `videogen generate` loads it


@pytest.mark.skipif(not SHIPPED, reason="videogen/default_model is not built yet (scripts/train_default.sh)")
def test_shipped_tokenizer_reads_prompts_as_typed(shipped_tokenizer):
    """The ids of the committed prompts are the ones the model was trained on, and UPPER
    case, Title Case or a trailing '.', '!' or ',' changes none of them."""
    before = json.loads(IDS_BEFORE.read_text())["ids"]
    prompts = [p for p in (ROOT / "data" / "prompts_shapes.txt").read_text().split("\n") if p.strip()]
    assert sorted(before) == sorted(prompts) and len(prompts) == 69
    for prompt in prompts:
        ids = shipped_tokenizer(prompt).input_ids
        assert ids == before[prompt], prompt
        for typed in [prompt.upper(), prompt.title()] + [prompt + mark for mark in ".!,"]:
            assert shipped_tokenizer(typed).input_ids == ids, typed
    for name in ("model_index.json", os.path.join("tokenizer", "tokenizer_config.json")):
        text = open(os.path.join(DEFAULT_MODEL_DIR, name)).read()
        assert "PreTrainedTokenizerFast" in text and "T5Tokenizer" not in text, name


@pytest.mark.skipif(not SHIPPED, reason="videogen/default_model is not built yet (scripts/train_default.sh)")
def test_shipped_vocabulary_and_unknown_words(shipped_tokenizer):
    from videogen.data.shapes import COLOURS, MOTIONS, SHAPES
    from videogen.models.text import unknown_words, vocabulary_words

    world = set(COLOURS) | set(SHAPES) | {w for m in MOTIONS for w in m.split()}
    filler = {"a", "on", "black", "background", "the", "is"}
    assert set(vocabulary_words(shipped_tokenizer)) == world | filler  # no sub-word such as "st"
    assert unknown_words(shipped_tokenizer, "A Yellow Triangle moving left.") == []
    assert unknown_words(shipped_tokenizer, "a crimson ball") == ["crimson", "ball"]


@pytest.mark.skipif(not SHIPPED, reason="videogen/default_model is not built yet (scripts/train_default.sh)")
def test_generate_warns_once_about_unknown_words(tmp_path, caplog):
    from videogen.pipelines.pipeline import generate_to_file

    with caplog.at_level(logging.WARNING, logger="videogen"):
        generate_to_file("A Red Circle, moving right!", str(tmp_path / "known.mp4"), frames=1, progress=False)
        assert not caplog.records, [r.getMessage() for r in caplog.records]
        generate_to_file("a crimson ball", str(tmp_path / "unknown.mp4"), frames=1, progress=False)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("unknown words: 'crimson', 'ball'; this model knows: "), lines
    assert "(colours)" in lines[0] and "circle, square, triangle (shapes)" in lines[0]


@pytest.mark.skipif(not SHIPPED, reason="videogen/default_model is not built yet (scripts/train_default.sh)")
def test_generate_title_case_prompt_draws_it(tmp_path):
    """Typed as a new user would: before the normaliser this drew a purple square moving
    right ("Yellow" read as Y/e/ll/ow)."""
    from videogen.data.video_io import read_video
    from videogen.evaluation.shapes_scorer import score_video

    out = tmp_path / "yellow.mp4"
    done = subprocess.run([sys.executable, "-m", "videogen", "generate", "A Yellow Triangle moving left.",
                           "--frames", "33", "-o", str(out)], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "unknown words" not in done.stderr
    row = score_video(read_video(str(out)), "a yellow triangle moving left")
    assert row["presence"] >= 0.9 and row["colour_ok"] and row["shape_ok"] and row["direction_ok"], row
