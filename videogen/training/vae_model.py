"""The VAE's training forward and losses: `Reconstruction` (encode, sample, decode chunk by
chunk, without the clamp), PSNR, the foreground mask, the weighted loss terms, and the
identity init of the temporal convs.

Shapes: B batch, F pixel frames, F' latent frames, z latent channels, H x W pixels.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import patchify, unpatchify

from videogen.training.config import VAELossConfig

# Independent random streams of VAE training, mixed into every seed.
TRAIN_STREAM, STATS_STREAM, EVAL_STREAM, IMAGE_STREAM, WARMUP_STREAM = 0x7A1, 0x57A, 0xE7A, 0x1A6, 0x3A7
# Pixel frames per latent frame after the first: AutoencoderKLWan's encode/decode chunks
# (its 4x temporal compression, which the task checks the VAE has).
CHUNK = 4

class Reconstruction(torch.nn.Module):
    """The VAE's training forward: encode, sample z, decode frame by frame without clamping.

    `AutoencoderKLWan.decode` clamps to [-1, 1], which zeroes the gradient of every pixel
    that overshoots (a bright colour could then never come back down); this is its loop
    without the clamp. Wrapping it in a module lets accelerate (DDP) see one forward.
    """

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.encoder_frozen = False

    def freeze_encoder(self) -> None:
        """Stop training encoder and quant_conv (and skip their backward)."""
        for module in (self.vae.encoder, self.vae.quant_conv):
            module.requires_grad_(False)
        self.encoder_frozen = True

    def forward(self, video: torch.Tensor, generator: Optional[torch.Generator] = None, warmup: int = 0) -> tuple:
        """video (B, 3, F, H, W), F = 1+4k -> (reconstruction, mean, logvar (B, z, F', h, w)).

        Encoder and decoder run one latent frame (4 pixel frames; the first: 1) at a time,
        carrying their causal caches, as `AutoencoderKLWan` does. The first `warmup` latent
        frames run without gradient and only fill the caches: the outputs cover the frames
        after them (pixel frames 4*warmup-3 on), so a long clip trains the steady state of
        both caches at the cost of a forward pass over its start (truncated backprop).
        """
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        vae = self.vae
        if vae.config.patch_size is not None:
            video = patchify(video, patch_size=vae.config.patch_size)
        enc_cache = [None] * vae._cached_conv_counts["encoder"]
        dec_cache = [None] * vae._cached_conv_counts["decoder"]
        grad = torch.is_grad_enabled()
        outs, moments = [], []
        for i in range(1 + (video.shape[2] - 1) // CHUNK):
            chunk = video[:, :, :1] if i == 0 else video[:, :, 1 + CHUNK * (i - 1):1 + CHUNK * i]
            trained = i >= warmup
            with torch.set_grad_enabled(grad and trained and not self.encoder_frozen):
                h = vae.quant_conv(vae.encoder(chunk, feat_cache=enc_cache, feat_idx=[0]))
            with torch.set_grad_enabled(grad and trained):
                z = DiagonalGaussianDistribution(h).sample(generator=generator)
                out = vae.decoder(vae.post_quant_conv(z), feat_cache=dec_cache, feat_idx=[0], first_chunk=i == 0)
            if trained:
                outs.append(out)
                moments.append(h)
        out = torch.cat(outs, 2)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        mean, logvar = torch.chunk(torch.cat(moments, 2), 2, dim=1)
        return out, mean, torch.clamp(logvar, -30.0, 20.0)


def warmup_frames(warmup: int) -> int:
    """Pixel frames whose latents `Reconstruction(..., warmup=warmup)` only warms up on."""
    return 0 if warmup == 0 else 1 + CHUNK * (warmup - 1)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-clip PSNR in dB of (B, 3, F, H, W) videos in [-1, 1] (peak = the full range),
    over the pixels where `mask` (broadcast to the videos) is true, or all of them."""
    err = ((a.float() - b.float()) / 2).pow(2)
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        mask = mask.expand_as(err)
        mse = (err * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def _edges(x: torch.Tensor) -> tuple:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def foreground_mask(video: torch.Tensor, threshold: float = 0.1, grow: int = 1) -> torch.Tensor:
    """(B, 1, F, H, W) bool: pixels of a (B, 3, F, H, W) video in [-1, 1] farther than
    `threshold` (any channel) from their frame's median colour, dilated by `grow` pixels."""
    background = video.flatten(3).median(dim=3).values[..., None, None]
    mask = (video - background).abs().amax(dim=1, keepdim=True) > threshold
    if grow:
        k = 2 * grow + 1
        mask = F.max_pool3d(mask.float(), (1, k, k), stride=1, padding=(0, grow, grow)) > 0
    return mask


def loss_terms(recon: torch.Tensor, video: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
               w: VAELossConfig) -> dict:
    """{'loss', 'l1', 'mse', 'edge', 'kl', 'fg'}: scalar tensors; 'loss' is the weighted sum."""
    diff = recon.float() - video.float()
    terms = {"l1": diff.abs().mean(), "mse": diff.pow(2).mean(),
             "kl": 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).mean()}
    terms["edge"] = (sum((a - b).abs().mean() for a, b in zip(_edges(recon.float()), _edges(video.float())))
                     if w.edge else torch.zeros((), device=diff.device))
    if w.foreground:
        fg = foreground_mask(video.float()).expand_as(diff)
        count = fg.sum().clamp_min(1)
        terms["fg"] = (diff.abs() * fg).sum() / count + (diff.pow(2) * fg).sum() / count
    else:
        terms["fg"] = torch.zeros((), device=diff.device)
    terms["loss"] = (w.l1 * terms["l1"] + w.mse * terms["mse"] + w.edge * terms["edge"] + w.kl * terms["kl"]
                     + w.foreground * terms["fg"])
    return terms



def identity_time_convs(vae) -> int:
    """Set the temporal convs of the VAE's 3D resampling layers to identities; returns how many.

    Encoder (downsample3d): a stride-2 conv over (last frame of the previous chunk, the
    chunk's frames) keeps the middle frame of each window. Decoder (upsample3d): the conv
    makes 2x channels, split into two output frames; both start as copies of the current
    frame. So every latent frame starts out encoded and decoded like the first one (which
    skips these convs). The `init_weight` / `init_weight2` of Wan2.1's own VAE code.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanResample

    count = 0
    with torch.no_grad():
        for module in vae.modules():
            if not isinstance(module, WanResample) or module.mode not in ("downsample3d", "upsample3d"):
                continue
            conv = module.time_conv
            in_ch = conv.weight.shape[1]
            conv.weight.zero_()
            conv.bias.zero_()
            eye = torch.eye(in_ch, dtype=conv.weight.dtype)
            if module.mode == "downsample3d":
                conv.weight[:, :, 1, 0, 0] = eye
            else:
                conv.weight[:in_ch, :, -1, 0, 0] = eye
                conv.weight[in_ch:, :, -1, 0, 0] = eye
            count += 1
    return count
