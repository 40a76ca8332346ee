"""The tiny Wan VAE: compression factors, size checks, streaming == full decode, save/load."""

import contextlib

import numpy as np
import pytest
import torch

from videogen.models.vae import VAEConfig
from videogen.errors import UsageError
from videogen.models.vae import (StreamingDecoder, StreamingEncoder, build_vae, check_video_size, decode_latents,
                          encode_video, frames_to_uint8, latent_frames_for, pixel_frames_for,
                          vae_factors)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions run ~10x faster on 1 thread than on 2 busy shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae(VAEConfig())


@pytest.fixture(scope="module")
def clip():
    """(1, 3, 17, 32, 32) in [-1, 1]: a smooth pattern drifting over time."""
    t = torch.arange(17).view(17, 1, 1)
    y, x = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    channels = [torch.sin((x + t) / 5.0), torch.cos((y - t) / 7.0), torch.sin((x + y + 2 * t) / 9.0)]
    return torch.stack(channels)[None].float()


@pytest.fixture(scope="module")
def latents(vae, clip):
    return encode_video(vae, clip)


def test_default_config_compresses_4x_in_time_and_space(vae, latents):
    assert vae_factors(vae) == (4, 4)
    assert latents.shape == (1, 4, 5, 8, 8)  # 17 = 1 + 4*4 frames -> 1 + 4 latents
    assert torch.isfinite(latents).all()


def test_frame_arithmetic():
    assert [latent_frames_for(n, 4) for n in (1, 2, 5, 17, 240, 241)] == [1, 2, 2, 5, 61, 61]
    assert [pixel_frames_for(k, 4) for k in (1, 2, 5, 61)] == [1, 5, 17, 241]
    with pytest.raises(UsageError):
        latent_frames_for(0, 4)


def test_streaming_decode_equals_full_decode(vae, latents):
    full = decode_latents(vae, latents)
    assert full.shape == (1, 3, 17, 32, 32)
    assert (full.abs() < 1).float().mean() > 0.9  # not all clamped: the comparison means something
    decoder = StreamingDecoder(vae)
    chunks = [decoder.push(latents[:, :, i]) for i in range(latents.shape[2])]
    assert [c.shape[2] for c in chunks] == [1, 4, 4, 4, 4]
    streamed = torch.cat(chunks, dim=2)
    assert (streamed - full).abs().max().item() <= 1e-5
    # the cache holds a fixed number of fixed-size tensors, whatever the length so far
    sizes = [tuple(c.shape) for c in decoder._cache if torch.is_tensor(c)]
    decoder.push(latents[:, :, -1])
    assert [tuple(c.shape) for c in decoder._cache if torch.is_tensor(c)] == sizes
    decoder.reset()  # after a reset the first frame decodes to one pixel frame again
    torch.testing.assert_close(decoder.push(latents[:, :, 0]), full[:, :, :1], atol=1e-5, rtol=0)


def test_bad_sizes_raise_usage_errors(vae, clip):
    with pytest.raises(UsageError, match="28x28 or 32x32"):
        check_video_size(vae, 30, 30)
    with pytest.raises(UsageError, match="multiple of 8"):
        check_video_size(vae, 36, 32, patch_size=2)
    check_video_size(vae, 32, 48, patch_size=2)
    with pytest.raises(UsageError, match="1\\+4k frames"):
        encode_video(vae, clip[:, :, :16])
    with pytest.raises(UsageError, match="temperal_downsample"):
        build_vae(VAEConfig(temperal_downsample=[True, False]))
    with pytest.raises(UsageError, match="not found"):
        build_vae(VAEConfig(pretrained="/nonexistent/vae"))


def test_posterior_sampling_is_seeded(vae, clip, latents):
    short = clip[:, :, :5]  # 1 + 4 frames -> 2 latent frames

    def sample(seed):
        return encode_video(vae, short, sample=True, generator=torch.Generator().manual_seed(seed))

    a, b, c = sample(1), sample(1), sample(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, latents[:, :, :2])  # the mean is the default, not a sample


def test_save_load_round_trip(vae, latents, tmp_path):
    vae.save_pretrained(tmp_path)
    loaded = build_vae(VAEConfig(pretrained=str(tmp_path)))
    assert vae_factors(loaded) == (4, 4)
    assert loaded.config.latents_std == [1.0] * 4
    assert torch.equal(decode_latents(loaded, latents[:, :, :2]), decode_latents(vae, latents[:, :, :2]))


def test_pipeline_dir_instead_of_vae_dir_names_the_subfolder(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="did you mean .*vae'"):
        build_vae(VAEConfig(pretrained=str(tmp_path)))


def test_frames_to_uint8():
    video = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 4, 1, 1).expand(1, 3, 4, 1, 2)
    frames = frames_to_uint8(video)
    assert frames.shape == (1, 4, 1, 2, 3) and frames.dtype == np.uint8
    assert frames[0, :, 0, 0, 0].tolist() == [0, 128, 255, 255]


def test_onednn_route_is_scoped_and_exact(vae, latents):
    """The decoder's oneDNN route gives the reference pixels (also through the upsamplers' 2D
    convs and a weight changed in between) and leaves no patch or hook behind."""
    from videogen.models.vae import OneDNNRoute

    route = OneDNNRoute(vae.decoder)
    upsample = next(m for m in vae.decoder.modules() if isinstance(m, torch.nn.Upsample))
    conv2d = next(m for m in vae.decoder.modules() if type(m) is torch.nn.Conv2d)

    def decode(fast: bool):
        x = vae.post_quant_conv(latents[:, :, :2])
        cache = [None] * vae._cached_conv_counts["decoder"]
        with torch.no_grad(), (route if fast else contextlib.nullcontext()):
            if fast:
                assert torch.backends.mkldnn.is_available() and "_conv_forward" in vae.decoder.conv_in.__dict__
                assert "_conv_forward" in conv2d.__dict__ and upsample._forward_pre_hooks
            first = vae.decoder(x[:, :, :1], feat_cache=cache, feat_idx=[0], first_chunk=True)
            return torch.cat([first, vae.decoder(x[:, :, 1:], feat_cache=cache, feat_idx=[0])], dim=2)

    for changed in (False, True):
        if changed:  # the route's cached channels-last weights must follow the module's
            with torch.no_grad():
                vae.decoder.conv_out.weight.mul_(0.5)
        reference, fast = decode(False), decode(True)
        assert "_conv_forward" not in vae.decoder.conv_in.__dict__ and not upsample._forward_pre_hooks
        assert (fast - reference).abs().max().item() <= 1e-5
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(2.0)


def test_streaming_encode_equals_full_encode(vae, clip, latents):
    encoder = StreamingEncoder(vae)
    chunks = []
    while encoder.frames_pushed < clip.shape[2]:
        n = encoder.chunk_size()
        chunks.append(encoder.push(clip[:, :, encoder.frames_pushed:encoder.frames_pushed + n]))
    assert [c.shape for c in chunks] == [(1, 4, 8, 8)] * 5
    assert (torch.stack(chunks, dim=2) - latents).abs().max().item() <= 1e-5
    with pytest.raises(ValueError):
        encoder.push(clip[:, :, :1])  # after the first frame it takes 4 at a time


def test_a_copied_decoder_patches_the_shared_vae_and_goes_on_alike(vae, latents):
    """StreamSession.fork deep-copies its decoder with the VAE shared: the copy's cache is its
    own, and its oneDNN route patches the shared VAE's layers, not copies of them."""
    import copy

    decoder = StreamingDecoder(vae)
    decoder.push(latents[:, :, 0])
    clone = copy.deepcopy(decoder, {id(vae): vae})
    assert clone.vae is vae and clone._cache[0] is not decoder._cache[0]
    assert all(a is b for a, b in zip(clone._route.convs, decoder._route.convs))
    assert torch.equal(clone.push(latents[:, :, 1]), decoder.push(latents[:, :, 1]))
