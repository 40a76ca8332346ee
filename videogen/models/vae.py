"""The causal video VAE (diffusers AutoencoderKLWan): encode, decode, stream-decode.

A clip of 1 + 4k pixel frames maps to 1 + k latent frames: the first frame alone, then
each group of `temporal` frames. Latents leave this module normalised,
(z - latents_mean) / latents_std from the VAE config, and come back the same way.

`StreamingDecoder` turns one latent frame at a time into pixels with the decoder's
causal-conv feature cache, giving the same pixels as a full decode while holding only
a constant-size cache, so memory does not grow with the video length.

Shapes: B batch, F pixel frames, F' latent frames, z latent channels,
H x W pixels, h x w latent pixels (H / spatial, W / spatial).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import copy
import math
import os
from typing import Optional

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import patchify, unpatchify

from videogen.errors import UsageError


@dataclass
class VAEConfig:
    """Causal video VAE (diffusers AutoencoderKLWan). `pretrained` is a local directory."""

    pretrained: Optional[str] = None
    base_dim: int = 16
    z_dim: int = 4
    dim_mult: list = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 1
    temperal_downsample: list = field(default_factory=lambda: [True, True])

WAN_ENCODER_CHUNK = 4  # AutoencoderKLWan._encode reads frames 1, then 4 at a time


# --------------------------------------------------------------------------- building


def build_vae(cfg: VAEConfig) -> AutoencoderKLWan:
    """The VAE from the local directory cfg.pretrained, or a random one from cfg's sizes."""
    if cfg.pretrained:
        vae = _load_pretrained(cfg.pretrained)
    else:
        _check_vae_config(cfg)
        vae = AutoencoderKLWan(
            base_dim=cfg.base_dim, z_dim=cfg.z_dim, dim_mult=list(cfg.dim_mult),
            num_res_blocks=cfg.num_res_blocks, temperal_downsample=list(cfg.temperal_downsample),
            # An untrained VAE has no latent statistics yet: identity normalisation.
            latents_mean=[0.0] * cfg.z_dim, latents_std=[1.0] * cfg.z_dim,
            scale_factor_temporal=temporal_factor(cfg),
            scale_factor_spatial=2 ** (len(cfg.dim_mult) - 1))
    return vae.eval()


def _check_vae_config(cfg: VAEConfig) -> None:
    stages = len(cfg.dim_mult) - 1
    if len(cfg.temperal_downsample) != stages:
        raise UsageError(f"vae.temperal_downsample needs {stages} entries (one per downsampling "
                         f"stage of vae.dim_mult={list(cfg.dim_mult)}), not {len(cfg.temperal_downsample)}")
    if temporal_factor(cfg) != WAN_ENCODER_CHUNK:
        raise UsageError("vae.temperal_downsample must hold exactly two True entries: the Wan "
                         "encoder reads frames 4 at a time, so it needs 4x temporal compression")


def _load_pretrained(path: str) -> AutoencoderKLWan:
    if not os.path.isdir(path):
        raise UsageError(f"VAE directory '{path}' not found; set vae.pretrained to a local "
                         "directory holding config.json and the weights")
    if not os.path.isfile(os.path.join(path, "config.json")):
        hint = (f"; did you mean '{os.path.join(path, 'vae')}'?"
                if os.path.isfile(os.path.join(path, "vae", "config.json")) else "")
        raise UsageError(f"VAE directory '{path}' has no config.json{hint}")
    return AutoencoderKLWan.from_pretrained(path, local_files_only=True)


# --------------------------------------------------------------------------- sizes


def vae_factors(vae: AutoencoderKLWan) -> tuple:
    """(temporal, spatial) compression, from the architecture rather than config hints."""
    config = vae.config
    temporal = 2 ** sum(config.temperal_downsample[: len(config.dim_mult) - 1])
    spatial = 2 ** (len(config.dim_mult) - 1) * (config.patch_size or 1)
    return temporal, spatial


def latent_frames_for(num_frames: int, temporal: int) -> int:
    """Latent frames needed to decode at least num_frames pixel frames."""
    if num_frames < 1:
        raise UsageError(f"the number of frames must be at least 1, not {num_frames}")
    return math.ceil((num_frames - 1) / temporal) + 1


def pixel_frames_for(latent_frames: int, temporal: int) -> int:
    """Pixel frames that latent_frames decode to: the first alone, then `temporal` each."""
    return 1 + temporal * (latent_frames - 1)


def _nearest_multiples(size: int, multiple: int) -> list:
    below = size // multiple * multiple
    return [s for s in (below, below + multiple) if s > 0]


def check_video_size(vae: AutoencoderKLWan, height: int, width: int,
                     patch_size: Optional[int] = None) -> None:
    """Raise UsageError unless H and W divide by the VAE's spatial factor x patch_size.

    diffusers would silently crop or pad such sizes; we never resize behind the
    user's back, so the message names the nearest sizes that work.
    """
    _, spatial = vae_factors(vae)
    multiple = spatial * (patch_size or 1)
    if height % multiple == 0 and width % multiple == 0:
        return
    heights, widths = _nearest_multiples(height, multiple), _nearest_multiples(width, multiple)
    if len(heights) == len(widths):
        options = " or ".join(f"{h}x{w}" for h, w in zip(heights, widths))
    else:  # one side is below the multiple: only rounding up works for it
        options = f"a height in {heights} and a width in {widths}"
    why = f"VAE factor {spatial}" + (f" x patch size {patch_size}" if patch_size else "")
    raise UsageError(f"video size {height}x{width} (HxW) must be a multiple of {multiple} "
                     f"({why}); use {options}")


def temporal_factor(cfg: VAEConfig) -> int:
    """The temporal compression a VAEConfig builds (vae_factors reads it off a built VAE)."""
    return 2 ** sum(cfg.temperal_downsample)


from videogen.utils.frames import check_frame_count  # noqa: E402,F401  the rule lives in a leaf data/ can import


# --------------------------------------------------------------------------- encode / decode


def _latent_stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple:
    """latents_mean, latents_std as (1, z, 1, 1, 1) tensors on like's device and dtype."""
    def as_tensor(values):
        return torch.tensor(values, device=like.device, dtype=like.dtype).view(1, -1, 1, 1, 1)

    return as_tensor(vae.config.latents_mean), as_tensor(vae.config.latents_std)


def _unnormalise(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    mean, std = _latent_stats(vae, latents)
    return latents * std + mean


@torch.no_grad()
def encode_video(vae: AutoencoderKLWan, video: torch.Tensor, *, sample: bool = False,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """video (B, 3, F, H, W) in [-1, 1], F = 1+4k -> normalised latents (B, z, F', h, w).

    Uses the posterior mean unless sample=True. The VAE is frozen, so no gradients.
    """
    temporal, _ = vae_factors(vae)
    check_frame_count(video.shape[2], temporal)
    check_video_size(vae, video.shape[3], video.shape[4])
    video = video.to(device=vae.device, dtype=vae.dtype)
    posterior = vae.encode(video).latent_dist
    latents = posterior.sample(generator=generator) if sample else posterior.mode()
    mean, std = _latent_stats(vae, latents)
    return (latents - mean) / std


@torch.no_grad()
def decode_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents (B, z, F', h, w) -> video (B, 3, 1 + temporal(F'-1), H, W) in [-1, 1]."""
    latents = latents.to(device=vae.device, dtype=vae.dtype)
    return vae.decode(_unnormalise(vae, latents)).sample


def _channels_last_input(module, args):
    return (args[0].contiguous(memory_format=torch.channels_last),) + args[1:]


class OneDNNRoute:
    """While `with route:` is active, run the Conv2d/Conv3d layers of `module` through oneDNN
    (`aten.mkldnn_convolution`) in channels-last memory.

    For batch-1 CPU inference PyTorch picks its slow reference 3D convolution; oneDNN gives
    the same pixels (measured max diff 1e-6 on a decoded frame) in 0.45-0.7x the time.
    Inputs and weights go in channels-last (NDHWC), which oneDNN runs without reordering
    them on every call: 0.73x the decode time again (benchmarks/roofline.py --baseline).
    The 2D convolutions of the upsamplers and their nearest-neighbour upsampling take
    channels-last inputs too, so the frames they hand back to the 3D layers are already
    NDHWC (no layout copy before every causal conv): 0.83x the default model's streamed
    decode again. Weights are converted once and reused while they are unchanged.
    tests/test_vae.py holds it to the reference pixels within 1e-5. A no-op off the CPU,
    outside float32, with gradients enabled, or where oneDNN is missing.
    """

    def __init__(self, module: torch.nn.Module):
        self.convs = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))
                      and m.padding_mode == "zeros" and not isinstance(m.padding, str)]
        self.upsamplers = [m for m in module.modules() if isinstance(m, torch.nn.Upsample)]
        self._weights: dict = {}  # conv -> ((version, data pointer), channels-last weight)
        self._hooks: list = []

    def _usable(self) -> bool:
        weight = self.convs[0].weight if self.convs else None
        return (torch.backends.mkldnn.is_available() and weight is not None and weight.device.type == "cpu"
                and weight.dtype == torch.float32 and not torch.is_grad_enabled())

    def _weight(self, conv, memory_format) -> torch.Tensor:
        key = (conv.weight._version, conv.weight.data_ptr())
        cached = self._weights.get(conv)
        if cached is None or cached[0] != key:
            cached = self._weights[conv] = (key, conv.weight.detach().contiguous(memory_format=memory_format))
        return cached[1]

    def _fast(self, conv):
        memory_format = torch.channels_last_3d if isinstance(conv, torch.nn.Conv3d) else torch.channels_last
        weight_cl = self._weight(conv, memory_format)

        def forward(x, weight, bias):
            return torch.ops.aten.mkldnn_convolution(x.contiguous(memory_format=memory_format), weight_cl, bias,
                                                     conv.padding, conv.stride, conv.dilation, conv.groups)
        return forward

    def __enter__(self):
        if self._usable():
            for conv in self.convs:
                conv._conv_forward = self._fast(conv)  # an instance attribute shadows the class method
            self._hooks = [up.register_forward_pre_hook(_channels_last_input) for up in self.upsamplers]
        return self

    def __exit__(self, *exc) -> None:
        for conv in self.convs:
            conv.__dict__.pop("_conv_forward", None)
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


class _RoutedStream:
    """A streaming coder over a VAE with a oneDNN route over the parts it runs (`_parts`).

    A deep copy (e.g. `StreamSession.fork`) copies the caches, and builds its own route over
    the copy's VAE, shared or copied as the memo says: copying the route would copy the
    modules it patches, and the copy's pushes would run the unpatched ones."""

    vae: AutoencoderKLWan

    def _parts(self) -> list:
        raise NotImplementedError

    def _new_route(self) -> OneDNNRoute:
        return OneDNNRoute(torch.nn.ModuleList(self._parts()))

    def __deepcopy__(self, memo):
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            if key != "_route":
                setattr(clone, key, copy.deepcopy(value, memo))
        clone._route = clone._new_route()
        return clone


class StreamingDecoder(_RoutedStream):
    """Decode one latent frame at a time, carrying the decoder's causal-conv cache.

    This is `AutoencoderKLWan._decode` unrolled: its per-frame loop body, with the
    cache kept here between calls instead of inside the VAE. Each causal conv caches
    its last two input frames, so the state has a fixed size whatever the length.
    """

    def __init__(self, vae: AutoencoderKLWan):
        self.vae = vae
        self.device, self.dtype = vae.device, vae.dtype  # as at construction: each a walk over the modules
        self._stats = _latent_stats(vae, torch.empty((), device=self.device, dtype=self.dtype))
        self._route = self._new_route()
        self.reset()

    def _parts(self) -> list:
        return [self.vae.post_quant_conv, self.vae.decoder]

    def reset(self) -> None:
        """Forget all frames; the next push is a first frame again."""
        self._cache = [None] * self.vae._cached_conv_counts["decoder"]
        self.frames_pushed = 0

    @torch.no_grad()
    def push(self, latent_frame: torch.Tensor) -> torch.Tensor:
        """Normalised latent_frame (B, z, h, w) -> pixels (B, 3, n, H, W) in [-1, 1].

        n is 1 for the first frame after construction or reset, then `temporal`.
        """
        vae, (mean, std) = self.vae, self._stats
        z = latent_frame.to(device=self.device, dtype=self.dtype)[:, :, None]
        with self._route:
            x = vae.post_quant_conv(z * std + mean)  # un-normalised, as decode_latents does
            out = vae.decoder(x, feat_cache=self._cache, feat_idx=[0],
                              first_chunk=self.frames_pushed == 0)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        self.frames_pushed += 1
        return torch.clamp(out, min=-1.0, max=1.0)


class StreamingEncoder(_RoutedStream):
    """Encode a clip chunk by chunk, carrying the encoder's causal-conv cache: the first
    frame alone, then `temporal` frames at a time, one latent frame per chunk, as
    `AutoencoderKLWan._encode` reads them. Same latents as `encode_video` (posterior mean)
    while holding only a constant-size cache, so memory does not grow with the clip.
    """

    def __init__(self, vae: AutoencoderKLWan):
        self.vae = vae
        self._route = self._new_route()
        self.temporal = vae_factors(vae)[0]
        self._cache = [None] * vae._cached_conv_counts["encoder"]
        self.frames_pushed = 0

    def _parts(self) -> list:
        return [self.vae.encoder]

    def chunk_size(self) -> int:
        """How many pixel frames the next `push` takes: 1 for the first, then `temporal`."""
        return 1 if self.frames_pushed == 0 else self.temporal

    @torch.no_grad()
    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """chunk (B, 3, chunk_size(), H, W) in [-1, 1] -> normalised latent frame (B, z, h, w)."""
        vae = self.vae
        if chunk.shape[2] != self.chunk_size():
            raise ValueError(f"the encoder takes {self.chunk_size()} frames now, not {chunk.shape[2]}")
        x = chunk.to(device=vae.device, dtype=vae.dtype)
        if vae.config.patch_size is not None:
            x = patchify(x, patch_size=vae.config.patch_size)
        with self._route:
            out = vae.encoder(x, feat_cache=self._cache, feat_idx=[0])
        mean = vae.quant_conv(out).chunk(2, dim=1)[0]  # the posterior's mean; its log-variance is unused
        self.frames_pushed += chunk.shape[2]
        latent_mean, latent_std = _latent_stats(vae, mean)
        return ((mean - latent_mean) / latent_std)[:, :, 0]


def frames_to_uint8(video: torch.Tensor) -> np.ndarray:
    """video (B, 3, F, H, W) in [-1, 1] -> (B, F, H, W, 3) uint8 numpy."""
    pixels = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 4, 1).cpu().numpy()
