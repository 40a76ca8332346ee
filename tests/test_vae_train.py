"""VAE training: loss falls, checkpoints resume exactly, the export loads with latent statistics."""

import json
import os

import pytest
import torch

from videogen.models.vae import VAEConfig
from videogen.errors import UsageError
from videogen.data.shapes import HELD_OUT, write_shapes_dataset
from videogen.models.vae import build_vae, encode_video
from videogen.training.checkpoint import list_checkpoints
from videogen.training.config import load_vae_train_config
from videogen.training.logs import read_log
from videogen.training.vae_eval import eval_set
from videogen.training.vae_model import STATS_STREAM
from videogen.training.vae_task import DatasetClips, ShapesClips, make_clips, train_vae

TINY = """
vae: {base_dim: 8, z_dim: 4, dim_mult: [1, 2, 2], num_res_blocks: 1, temperal_downsample: [true, true]}
data: {frames: 5, size: 32}
train: {batch_size: 2, lr: 3.0e-3, warmup_steps: 2, max_steps: 12, checkpoint_every: 6, keep_checkpoints: 2,
        log_every: 2, eval_every: 6, eval_clips: 4, eval_frames: 9, eval_batch: 4, stats_clips: 4,
        init_logvar: -6.0}
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "vae.yaml"
    path.write_text(TINY)
    return str(path)


def _weights(export_dir):
    return build_vae(VAEConfig(pretrained=export_dir)).state_dict()


def test_train_resume_export(tiny, tmp_path):
    full = str(tmp_path / "full")
    out = train_vae(tiny, [f"train.output_dir={full}"])
    assert out["step"] == 12 and out["export"] == os.path.join(full, "export")

    losses = [r["loss"] for r in read_log(os.path.join(full, "log.jsonl")) if "loss" in r]
    assert len(losses) == 6
    assert sum(losses[-2:]) < 0.7 * sum(losses[:2]), losses
    assert [s for s, _ in list_checkpoints(full)] == [6, 12]  # keep_checkpoints=2
    history = json.load(open(os.path.join(full, "eval.json")))["history"]
    assert [h["step"] for h in history] == [6, 12]

    # The export loads as the pipeline will load it, with latent statistics that make
    # encode_video hand out zero-mean, unit-std latents on the clips they came from.
    vae = build_vae(VAEConfig(pretrained=out["export"]))
    assert len(vae.config.latents_mean) == len(vae.config.latents_std) == 4
    assert vae.config.latents_std != [1.0] * 4 and vae.config.latents_mean != [0.0] * 4
    clips = make_clips(load_vae_train_config(tiny))
    latents = encode_video(vae, clips.batch(4, STATS_STREAM, 0))
    assert torch.allclose(latents.mean(dim=(0, 2, 3, 4)), torch.zeros(4), atol=1e-3)
    assert torch.allclose(latents.std(dim=(0, 2, 3, 4), unbiased=False), torch.ones(4), atol=1e-3)
    assert json.load(open(os.path.join(out["export"], "eval.json")))["clips"] == 4

    # Stopped at step 6 and resumed: the same weights as the uninterrupted run.
    split = str(tmp_path / "split")
    assert train_vae(tiny, [f"train.output_dir={split}", "train.stop_at_step=6"])["export"] is None
    with pytest.raises(UsageError, match="--resume latest"):
        train_vae(tiny, [f"train.output_dir={split}"])
    assert train_vae(tiny, [f"train.output_dir={split}"], resume="latest")["step"] == 12
    for name, tensor in _weights(out["export"]).items():
        torch.testing.assert_close(_weights(os.path.join(split, "export"))[name], tensor, rtol=0, atol=1e-6)
    steps = [r["step"] for r in read_log(os.path.join(split, "log.jsonl")) if "loss" in r]
    assert steps == [2, 4, 6, 8, 10, 12]

    # --export: a checkpoint's VAE, without training.
    again = str(tmp_path / "from_ckpt")
    done = train_vae(tiny, [f"train.output_dir={split}"], resume=os.path.join(split, "checkpoint-000006"),
                     export=again)
    assert done["step"] == 6 and json.load(open(os.path.join(again, "eval.json")))["step"] == 6
    assert build_vae(VAEConfig(pretrained=again)).config.latents_std != [1.0] * 4


def test_freeze_encoder(tiny, tmp_path):
    """From train.freeze_encoder_at on, the encoder (so the latent space and its export
    statistics) stays fixed while the decoder trains; crossing the freeze step in one run
    or resuming after it gives the same weights."""
    freeze = ["train.freeze_encoder_at=6", "train.eval_every=0"]
    one = str(tmp_path / "one")
    out = train_vae(tiny, [f"train.output_dir={one}", *freeze])
    split = str(tmp_path / "split")
    train_vae(tiny, [f"train.output_dir={split}", "train.stop_at_step=6", *freeze])
    at_freeze = str(tmp_path / "at_freeze")
    train_vae(tiny, [f"train.output_dir={split}", *freeze], resume="latest", export=at_freeze)
    train_vae(tiny, [f"train.output_dir={split}", *freeze], resume="latest")

    final, frozen = _weights(out["export"]), _weights(at_freeze)
    encoder = [n for n in final if n.startswith(("encoder.", "quant_conv."))]
    decoder = [n for n in final if n.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder
    for name in encoder:
        torch.testing.assert_close(final[name], frozen[name], rtol=0, atol=0)
    assert any(not torch.equal(final[n], frozen[n]) for n in decoder)
    for name, tensor in _weights(os.path.join(split, "export")).items():
        torch.testing.assert_close(tensor, final[name], rtol=0, atol=1e-6)
    same = [build_vae(VAEConfig(pretrained=d)).config for d in (out["export"], at_freeze)]
    assert same[0].latents_mean == same[1].latents_mean and same[0].latents_std == same[1].latents_std


def test_image_batch_and_foreground_loss(tiny, tmp_path):
    """Single frames beside the clips, and the foreground term: both logged, loss falls."""
    out = str(tmp_path / "img")
    train_vae(tiny, [f"train.output_dir={out}", "data.image_batch=3", "loss.foreground=1.0", "data.warmup_chunks=2",
                     "train.eval_long_clips=2", "train.eval_long_frames=17"])
    log = read_log(os.path.join(out, "log.jsonl"))
    rows = [r for r in log if "loss" in r]
    assert [r["step"] for r in log if "eval_psnr_long" in r] == [6, 12]
    assert all(r["image_psnr"] > 0 and r["fg"] > 0 for r in rows)
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], rows
    with pytest.raises(UsageError, match="image_batch"):
        train_vae(tiny, [f"train.output_dir={out}-bad", "data.image_batch=-1"])


def test_resume_at_a_new_peak_lr(tiny, tmp_path):
    """A checkpoint carries its schedule; train.lr given on resume becomes the new peak."""
    out = str(tmp_path / "lr")
    train_vae(tiny, [f"train.output_dir={out}", "train.stop_at_step=6"])
    old = {r["step"]: r["lr"] for r in read_log(os.path.join(out, "log.jsonl")) if "lr" in r}
    train_vae(tiny, [f"train.output_dir={out}", "train.lr=1.0e-3"], resume="latest")
    new = {r["step"]: r["lr"] for r in read_log(os.path.join(out, "log.jsonl")) if "lr" in r}
    assert all(new[s] == pytest.approx(old[s]) for s in old)  # the log before the resume is kept
    straight = str(tmp_path / "straight")
    train_vae(tiny, [f"train.output_dir={straight}", "train.lr=1.0e-3"])
    ref = {r["step"]: r["lr"] for r in read_log(os.path.join(straight, "log.jsonl")) if "lr" in r}
    for step in (8, 10, 12):  # the same cosine factor, times the new peak
        assert new[step] == pytest.approx(ref[step], rel=1e-6)


def test_config_errors(tiny):
    with pytest.raises(UsageError, match="did you mean 'train.lr'"):
        load_vae_train_config(tiny, ["train.lrr=1"])
    with pytest.raises(UsageError, match="1\\+4k"):
        load_vae_train_config(tiny, ["data.frames=8"])
    with pytest.raises(UsageError, match="data.dataset"):
        load_vae_train_config(tiny, ["data.dataset=/nonexistent/shapes"])


def test_held_out_pairs_only_in_eval():
    held = {" ".join(p) for p in HELD_OUT}
    assert not held & {" ".join(p) for p in ShapesClips(5, 32, 0, "default").pairs}
    videos, names = eval_set(64, 5, 32, seed=1234)
    assert videos.shape == (64, 3, 5, 32, 32) and videos.dtype == torch.uint8
    assert held <= set(names) and len(set(names)) == 21


def test_h_x_w_clips_are_the_centre_crop_of_the_square_canvas(tiny):
    assert load_vae_train_config(tiny, ["data.size=[16,32]"]).data.size == [16, 32]
    assert load_vae_train_config(tiny, ["data.size=[32,32]"]).data.size == 32
    wide, square = ShapesClips(5, [16, 32], 0, "default").batch(2, 3), ShapesClips(5, 32, 0, "default").batch(2, 3)
    assert wide.shape == (2, 3, 5, 16, 32) and torch.equal(wide, square[..., 8:24, :])
    videos, names = eval_set(4, 5, [32, 16], seed=1)
    assert videos.shape == (4, 3, 5, 32, 16) and torch.equal(videos, eval_set(4, 5, 32, seed=1)[0][..., 8:24])


def test_dataset_clips_are_drawn_by_key(tmp_path):
    data = write_shapes_dataset(tmp_path / "shapes", num=4, frames=13, size=32)
    clips = DatasetClips(str(data), frames=9, size=32, seed=0)
    a, b = clips.batch(3, 7, 1), clips.batch(3, 7, 2)
    assert a.shape == (3, 3, 9, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, clips.batch(3, 7, 1)) and not torch.equal(a, b)


def test_reconstruction_chunks_and_warmup(monkeypatch):
    """The training forward is AutoencoderKLWan's encode/decode, chunk by chunk; with a
    warm-up it returns exactly the frames after it, from the same caches."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from videogen.training.vae_model import Reconstruction, warmup_frames

    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)
    torch.manual_seed(0)
    vae = build_vae(VAEConfig(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], temperal_downsample=[True, True]))
    video = torch.rand(1, 3, 17, 32, 32) * 2 - 1
    rec = Reconstruction(vae)
    with torch.no_grad():
        full = vae.decode(vae.encode(video).latent_dist.mode()).sample
        ours, mean, _ = rec(video)
        assert (ours.clamp(-1, 1) - full).abs().max().item() <= 1e-5
        assert mean.shape == (1, 4, 5, 8, 8)
        tail, tail_mean, _ = rec(video, warmup=2)
    assert tail.shape[2] == 17 - warmup_frames(2) == 12 and tail_mean.shape[2] == 3
    assert (tail - ours[:, :, warmup_frames(2):]).abs().max().item() <= 1e-5
    tail, _, _ = rec(video, warmup=2)  # with gradient: it reaches the weights through the trained frames only
    tail.sum().backward()
    assert vae.decoder.conv_out.weight.grad is not None and vae.encoder.conv_in.weight.grad is not None


def test_identity_time_convs_pass_a_frame_through():
    """Encoder: each stride-2 window keeps its middle frame; decoder: both new frames copy
    the current one. Two 3D resampling layers each side for 4x time."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanResample

    from videogen.training.vae_model import identity_time_convs

    vae = build_vae(VAEConfig(base_dim=8, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                              temperal_downsample=[True, True]))
    assert identity_time_convs(vae) == 4
    layers = [m for m in vae.modules() if isinstance(m, WanResample) and m.mode.endswith("3d")]
    x = torch.randn(1, 1, 5, 3, 3)
    for layer in layers:
        c = layer.time_conv.in_channels
        feats = x.expand(1, c, 5, 3, 3).contiguous() * torch.arange(1, c + 1.0).view(1, c, 1, 1, 1)
        with torch.no_grad():
            out = layer.time_conv(feats)
        if layer.mode == "downsample3d":  # (previous chunk's last, 4 frames) -> 2 frames
            torch.testing.assert_close(out, feats[:, :, [1, 3]])
        else:  # causal, same length; channels [:c] and [c:] become the two frames
            torch.testing.assert_close(out[:, :c], feats)
            torch.testing.assert_close(out[:, c:], feats)
