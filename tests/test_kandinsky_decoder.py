"""The Kandinsky 2.2 decoder plugin, on the tiny random-weight instance (the real weights are not needed)."""

import pytest
import torch

from evalkit.contracts import Batch, Protocol
from evalkit.decoders.kandinsky import ENV_DIR, REPO_ID, Kandinsky22Decoder
from evalkit.errors import EmbeddingContractError, WeightsNotFoundError


@pytest.fixture(scope="module")
def decoder():
    return Kandinsky22Decoder.tiny()


def batch(seeds):
    return Batch.from_prompts([f"prompt {i}" for i in range(len(seeds))], seeds=list(seeds), category="color")


def protocol(decoder, steps=2, guidance=4.0, resolution=None):
    return Protocol(
        decoder=decoder.name,
        num_inference_steps=steps,
        guidance_scale=guidance,
        resolution=resolution or decoder.resolution,
        images_per_prompt=1,
    )


def embeds(n, dim=16, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_declares_the_contract(decoder):
    assert decoder.name == "kandinsky22" and decoder.normalisation == "raw"
    assert decoder.embedding_space == "clip-vit-bigg-14" and decoder.embedding_dim == 16
    assert decoder.resolution == 16 and decoder.default_guidance_scale == 4.0
    assert decoder.num_parameters() == sum(p.numel() for p in decoder.parameters()) > 0
    assert torch.equal(decoder.negative_image_embeds, torch.zeros(16))


def test_real_size_architecture_without_memory():
    real = Kandinsky22Decoder.random_init(size="real", device="meta")
    assert real.embedding_dim == 1280 and real.resolution == 512 and real.default_num_inference_steps == 50
    assert sum(p.numel() for p in real.unet.parameters()) == 1_253_057_288
    assert sum(p.numel() for p in real.movq.parameters()) == 67_832_495
    assert real.movq_scale_factor == 8 and real.scheduler_config["_class_name"] == "DDPMScheduler"


def test_shape_range_and_protocol_resolution(decoder):
    images = decoder.decode(embeds(2), batch([1, 2]), protocol(decoder))
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.std() > 0
    larger = decoder.decode(embeds(1), batch([1]), protocol(decoder, resolution=32))
    assert larger.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="multiple of 4"):
        decoder.decode(embeds(1), batch([1]), protocol(decoder, resolution=18))


def test_determinism_and_sensitivity(decoder):
    p, e = protocol(decoder), embeds(3)
    images = decoder.decode(e, batch([5, 6, 7]), p)
    torch.testing.assert_close(decoder.decode(e, batch([5, 6, 7]), p), images, rtol=0, atol=0)
    other = decoder.decode(embeds(3, seed=1), batch([5, 6, 7]), p)
    assert all(not torch.allclose(other[i], images[i]) for i in range(3)), "different embeddings, different images"
    reseeded = decoder.decode(e, batch([8, 9, 10]), p)
    assert all(not torch.allclose(reseeded[i], images[i]) for i in range(3)), "different seeds, different images"


def test_image_depends_only_on_its_row_and_seed(decoder):
    p, e, seeds = protocol(decoder), embeds(4), [11, 12, 13, 14]
    together = decoder.decode(e, batch(seeds), p)
    for i, seed in enumerate(seeds):
        alone = decoder.decode(e[i : i + 1], batch([seed]), p)
        torch.testing.assert_close(
            alone, together[i : i + 1], rtol=0, atol=1e-4
        )  # float kernels vary with the batch shape
    chunked = Kandinsky22Decoder.tiny()
    chunked.max_batch = 3  # chunks of 3 + 1
    torch.testing.assert_close(chunked.decode(e, batch(seeds), p), together, rtol=0, atol=1e-4)


def test_matches_the_public_pipeline(decoder):
    """Same components, same seeds (one CPU generator per image): the images of diffusers' KandinskyV22Pipeline."""
    from diffusers import KandinskyV22Pipeline

    pipe = KandinskyV22Pipeline(unet=decoder.unet, scheduler=decoder.make_scheduler(), movq=decoder.movq)
    pipe.set_progress_bar_config(disable=True)
    e, seeds = embeds(2), [42, 43]
    for guidance in (4.0, 1.0):
        ours = decoder.decode(e, batch(seeds), protocol(decoder, steps=3, guidance=guidance))
        theirs = pipe(
            image_embeds=e,
            negative_image_embeds=torch.zeros(2, 16),
            height=16,
            width=16,
            num_inference_steps=3,
            guidance_scale=guidance,
            output_type="pt",
            generator=[torch.Generator().manual_seed(s) for s in seeds],
        ).images
        torch.testing.assert_close(ours, (theirs * 0.5 + 0.5).clamp(0, 1), rtol=0, atol=1e-5)


def test_guidance_and_negative_embedding():
    decoder = Kandinsky22Decoder.tiny()
    e, b = embeds(2), batch([3, 4])
    plain = decoder.decode(e, b, protocol(decoder, guidance=1.0))
    guided = decoder.decode(e, b, protocol(decoder, guidance=4.0))
    assert plain.shape == guided.shape and not torch.allclose(plain, guided)
    decoder.set_negative_embedding(torch.ones(1, 16))
    torch.testing.assert_close(decoder.decode(e, b, protocol(decoder, guidance=1.0)), plain)  # no guidance: unused
    assert not torch.allclose(decoder.decode(e, b, protocol(decoder, guidance=4.0)), guided)
    with pytest.raises(EmbeddingContractError, match=r"shape \(16,\)"):
        decoder.set_negative_embedding(torch.ones(8))


def test_embedding_dimension_mismatch_names_both_dims(decoder):
    with pytest.raises(EmbeddingContractError, match="16-d.*768-d"):
        decoder.decode(torch.randn(2, 768), batch([1, 2]), protocol(decoder))
    real = Kandinsky22Decoder.random_init(size="real", device="meta")  # checked before any computation
    with pytest.raises(EmbeddingContractError, match="1280-d.*768-d"):
        real.decode(torch.randn(1, 768), batch([1]), protocol(real))


def test_layout_round_trip(tmp_path):
    decoder = Kandinsky22Decoder.tiny()
    decoder.set_negative_embedding(torch.linspace(-1, 1, 16))
    decoder.save_pretrained(tmp_path / "k22")
    for name in (
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "movq/config.json",
        "movq/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ):
        assert (tmp_path / "k22" / name).is_file(), name
    reloaded = Kandinsky22Decoder.from_pretrained(tmp_path / "k22")
    assert reloaded.resolution == 16 and reloaded.embedding_dim == 16
    torch.testing.assert_close(reloaded.negative_image_embeds, decoder.negative_image_embeds)
    p, e, b = protocol(decoder), embeds(2), batch([21, 22])
    torch.testing.assert_close(reloaded.decode(e, b, p), decoder.decode(e, b, p), rtol=0, atol=0)
    assert Kandinsky22Decoder.from_pretrained(tmp_path / "k22", resolution=32).resolution == 32


def test_missing_folders_name_the_path(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(WeightsNotFoundError, match="--decoder-path") as error:
        Kandinsky22Decoder.from_pretrained(missing)
    assert str(missing) in str(error.value) and REPO_ID in str(error.value)
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    with pytest.raises(WeightsNotFoundError) as error:
        Kandinsky22Decoder.from_pretrained(tmp_path / "partial")
    assert str(tmp_path / "partial" / "movq") in str(error.value)
    monkeypatch.delenv(ENV_DIR, raising=False)
    with pytest.raises(WeightsNotFoundError, match=ENV_DIR):
        Kandinsky22Decoder.from_pretrained()


def test_pickle_only_unet_refused_unless_allowed(tmp_path):
    decoder = Kandinsky22Decoder.tiny()
    decoder.save_pretrained(tmp_path / "k22")
    unet_dir = tmp_path / "k22" / "unet"
    torch.save(decoder.unet.state_dict(), unet_dir / "diffusion_pytorch_model.bin")
    (unet_dir / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError, match="pickle") as error:
        Kandinsky22Decoder.from_pretrained(tmp_path / "k22")
    assert str(unet_dir) in str(error.value) and "allow_pickle" in str(error.value)
    reloaded = Kandinsky22Decoder.from_pretrained(tmp_path / "k22", allow_pickle=True)
    p, e, b = protocol(decoder), embeds(1), batch([5])
    torch.testing.assert_close(reloaded.decode(e, b, p), decoder.decode(e, b, p), rtol=0, atol=0)


def test_passes_the_decoder_contract(tmp_path):
    from tests.test_contracts import check_decoder

    check_decoder(Kandinsky22Decoder.tiny(), tmp_path)


# --------------------------------------------------------------------------- placement, resolution, memory levers


def test_memory_levers_keep_the_images(decoder):
    """Offload (execution device cpu) and MoVQ chunks change where and how much is computed at once, not the
    images; eager attention changes the kernels: images within 1e-4."""
    from diffusers.models.attention_processor import Attention, AttnAddedKVProcessor, AttnProcessor

    from evalkit.placement import place

    p, e, b = protocol(decoder), embeds(3), batch([31, 32, 33])
    reference = decoder.decode(e, b, p)

    offloaded = Kandinsky22Decoder.tiny(offload=True)
    place(offloaded, "cpu", "float32", role="decoder")
    assert [hook.model for hook in offloaded._offload_hooks] == [offloaded.unet, offloaded.movq]
    assert torch.equal(offloaded.decode(e, b, p), reference)

    for size, calls in ((1, [1, 1, 1]), (2, [2, 1]), (3, [3])):
        chunked = Kandinsky22Decoder.tiny(vae_chunk_size=size)
        seen, original = [], chunked.movq.decode
        chunked.movq.decode = lambda x, **kw: (seen.append(x.shape[0]), original(x, **kw))[1]
        out = chunked.decode(e, b, p)
        assert seen == calls
        # CPU convolution kernels block the batch differently: sums of other orders, ≤ ~3e-6 measured
        torch.testing.assert_close(out, reference, rtol=0, atol=0 if calls == [3] else 1e-5)

    eager = Kandinsky22Decoder.tiny(attention="eager")
    processors = {
        type(m.processor) for model in (eager.unet, eager.movq) for m in model.modules() if isinstance(m, Attention)
    }
    assert processors == {AttnAddedKVProcessor, AttnProcessor}  # UNet: added-KV attention; MoVQ: plain
    torch.testing.assert_close(eager.decode(e, b, p), reference, rtol=0, atol=1e-4)
    torch.testing.assert_close(Kandinsky22Decoder.tiny(attention="sdpa").decode(e, b, p), reference, rtol=0, atol=0)


def test_offload_on_meta_moves_everything_and_levers_are_checked():
    from evalkit.errors import SettingError
    from evalkit.placement import place

    decoder = Kandinsky22Decoder.tiny(offload=True)
    place(decoder, "meta", "bfloat16", role="decoder")
    assert not decoder._offload_hooks and {(t.device.type, t.dtype) for t in decoder.parameters()} == {
        ("meta", torch.bfloat16)
    }
    for bad, message in (
        ({"attention": "flash"}, "attention must be one of sdpa, eager"),
        ({"vae_chunk_size": 0}, "vae_chunk_size must be a whole number ≥ 1"),
        ({"offload": "yes"}, "offload must be True or False"),
    ):
        with pytest.raises(SettingError, match=message):
            Kandinsky22Decoder.tiny(**bad)


def test_resolution_is_chosen_at_load():
    from evalkit.decoders import load_decoder
    from evalkit.errors import SettingError

    assert load_decoder("kandinsky22", random_init="tiny", resolution=32).resolution == 32
    with pytest.raises(SettingError, match="multiple of 4"):
        load_decoder("kandinsky22", random_init="tiny", resolution=18)
    with pytest.raises(SettingError, match="side a multiple of 64 from 256 to 1024; --resolution 500"):
        load_decoder("kandinsky22", random_init="real", resolution=500)  # refused before building 1.3 B weights
    assert Kandinsky22Decoder.random_init(size="real", device="meta", resolution=768).resolution == 768
    assert 512 in Kandinsky22Decoder.supported_resolutions and 1024 in Kandinsky22Decoder.supported_resolutions
