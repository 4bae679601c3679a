"""The Karlo (unCLIP) decoder on a tiny random stack: layout, determinism, batch independence, errors."""

import json

import pytest
import torch

from evalkit.contracts import Batch, Protocol
from evalkit.decoders.karlo import ENV_DIR, KarloDecoder
from evalkit.errors import WeightsNotFoundError
from tests.test_contracts import check_decoder

PROMPTS = ["a red circle and a blue square", "a striped star", "a big triangle and a small circle"]
LAYOUT = {
    "text_encoder",
    "tokenizer",
    "text_proj",
    "decoder",
    "super_res_first",
    "super_res_last",
    "decoder_scheduler",
    "super_res_scheduler",
}


@pytest.fixture(scope="module")
def karlo():
    return KarloDecoder.tiny()


def protocol(decoder, steps=2, guidance=None):
    return Protocol(
        decoder="karlo",
        num_inference_steps=steps,
        resolution=decoder.resolution,
        images_per_prompt=1,
        guidance_scale=decoder.default_guidance_scale if guidance is None else guidance,
    )


def embeds(n, seed=0, dim=32):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_contract(karlo, tmp_path):
    check_decoder(karlo, tmp_path)


def test_declares_its_space(karlo):
    assert (karlo.name, karlo.embedding_space, karlo.normalisation) == ("karlo", "clip-vit-l-14", "raw")
    assert karlo.embedding_dim == 32 and karlo.resolution == 32
    assert (karlo.default_num_inference_steps, karlo.super_res_num_inference_steps) == (25, 7)
    assert karlo.num_parameters() == sum(p.numel() for p in karlo.parameters()) > 0


def test_layout_round_trip_gives_identical_images(karlo, tmp_path):
    karlo.save_pretrained(tmp_path / "karlo")
    (tmp_path / "karlo" / "prior").mkdir()  # prior folders of the public layout are ignored
    assert LAYOUT <= {p.name for p in (tmp_path / "karlo").iterdir()}
    index = json.loads((tmp_path / "karlo" / "model_index.json").read_text())
    assert index["text_proj"] == ["unclip", "UnCLIPTextProjModel"] and index["decoder"] == [
        "diffusers",
        "UNet2DConditionModel",
    ]
    assert list((tmp_path / "karlo" / "decoder").glob("*.safetensors"))
    reloaded = KarloDecoder.from_pretrained(tmp_path / "karlo")
    b, p = Batch.from_prompts(PROMPTS, seeds=[1, 2, 3]), protocol(karlo)
    assert torch.equal(reloaded.decode(embeds(3), b, p), karlo.decode(embeds(3), b, p))
    small = KarloDecoder.from_pretrained(tmp_path / "karlo", super_res=False)
    assert small.resolution == 16 and small.super_res_first is None
    assert small.decode(embeds(3), b, protocol(small)).shape == (3, 3, 16, 16)


def test_deterministic_and_conditioned(karlo):
    b, p = Batch.from_prompts(PROMPTS, seeds=[5, 6, 7]), protocol(karlo)
    images = karlo.decode(embeds(3), b, p)
    assert torch.equal(karlo.decode(embeds(3), b, p), images)
    assert not torch.allclose(karlo.decode(embeds(3, seed=1), b, p), images, atol=1e-3)  # other embeddings
    other_prompts = Batch.from_prompts(["a green heart"] * 3, seeds=[5, 6, 7])
    assert not torch.allclose(karlo.decode(embeds(3), other_prompts, p), images, atol=1e-3)  # other prompts


def test_image_does_not_depend_on_its_batch(karlo):
    e, p = embeds(4, seed=3), protocol(karlo, guidance=4.0)
    b = Batch.from_prompts(PROMPTS + ["a dotted square"], seeds=[10, 11, 12, 13])
    batched = karlo.decode(e, b, p)
    for i in range(4):
        alone = karlo.decode(e[i : i + 1], b.subset([i]), p)
        torch.testing.assert_close(alone, batched[i : i + 1], atol=1e-4, rtol=0)
    reordered = karlo.decode(e.flip(0), b.subset([3, 2, 1, 0]), p)
    torch.testing.assert_close(reordered.flip(0), batched, atol=1e-4, rtol=0)
    chunked = KarloDecoder.tiny()
    chunked.max_batch = 3
    torch.testing.assert_close(chunked.decode(e, b, p), batched, atol=1e-4, rtol=0)


def test_shape_range_and_unguided(karlo):
    b = Batch.from_prompts(PROMPTS[:2], seeds=[0, 1])
    for guidance in (1.0, 8.0):
        images = karlo.decode(embeds(2), b, protocol(karlo, guidance=guidance))
        assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
        assert 0.0 <= images.min() and images.max() <= 1.0


def test_guidance_uses_the_learned_unconditional_embedding(karlo):
    b = Batch.from_prompts(PROMPTS[:1], seeds=[0])
    other = KarloDecoder.tiny()
    with torch.no_grad():
        other.text_proj.learned_classifier_free_guidance_embeddings.add_(1.0)
    unguided, guided = protocol(karlo, guidance=1.0), protocol(karlo, guidance=8.0)
    assert torch.equal(other.decode(embeds(1), b, unguided), karlo.decode(embeds(1), b, unguided))
    assert not torch.allclose(other.decode(embeds(1), b, guided), karlo.decode(embeds(1), b, guided), atol=1e-3)


def test_clear_errors_for_bad_inputs(karlo):
    b = Batch.from_prompts(PROMPTS[:2], seeds=[0, 1])
    with pytest.raises(ValueError, match=r"raw CLIP ViT-L/14 image embeddings of shape \(N, 32\), got \(2, 768\)"):
        karlo.decode(torch.randn(2, 768), b, protocol(karlo))
    with pytest.raises(ValueError, match="3 embeddings for a batch of 2"):
        karlo.decode(embeds(3), b, protocol(karlo))
    with pytest.raises(ValueError, match="renders 32×32"):
        karlo.decode(embeds(2), b, Protocol("karlo", 2, 8.0, 256))
    with pytest.raises(ValueError, match="at least 2 inference steps"):
        karlo.decode(embeds(2), b, protocol(karlo, steps=1))


def test_missing_folder_names_path_and_remedy(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-karlo"
    with pytest.raises(WeightsNotFoundError, match="no-such-karlo") as info:
        KarloDecoder.from_pretrained(missing)
    assert "kakaobrain/karlo-v1-alpha" in str(info.value) and "--decoder-path" in str(info.value)
    (tmp_path / "partial" / "decoder").mkdir(parents=True)
    with pytest.raises(WeightsNotFoundError, match="missing text_encoder/, tokenizer/"):
        KarloDecoder.from_pretrained(tmp_path / "partial")
    monkeypatch.delenv(ENV_DIR, raising=False)
    with pytest.raises(WeightsNotFoundError, match=ENV_DIR):
        KarloDecoder.from_pretrained()


def test_pickle_only_folder_refused_unless_allowed(karlo, tmp_path):
    from safetensors.torch import load_file

    folder = karlo.save_pretrained(tmp_path / "karlo")
    weights = folder / "decoder" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), folder / "decoder" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(WeightsNotFoundError, match=r"decoder holds only pickle weights .*allow_pickle=True"):
        KarloDecoder.from_pretrained(folder)
    reloaded = KarloDecoder.from_pretrained(folder, allow_pickle=True)
    b, p = Batch.from_prompts(PROMPTS[:1], seeds=[4]), protocol(karlo)
    assert torch.equal(reloaded.decode(embeds(1), b, p), karlo.decode(embeds(1), b, p))


def test_real_size_architecture_without_memory():
    """karlo-v1-alpha's configs on the meta device: sizes, and shapes flowing through every stage."""
    real = KarloDecoder.random_init("real", device="meta")
    assert (real.embedding_dim, real.resolution, real.tokenizer.model_max_length, len(real.tokenizer)) == (
        768,
        256,
        77,
        49408,
    )
    assert sum(p.numel() for p in real.decoder.parameters()) == 885_439_686
    assert sum(p.numel() for p in real.super_res_first.parameters()) == 691_579_523
    assert real.num_parameters() == 2_400_127_436
    prompt_embeds, hidden, mask = real.encode_prompts(["", "a red frog"])
    hidden, time_embeds = real.text_proj(
        image_embeddings=torch.empty(1, 768, device="meta"),
        prompt_embeds=prompt_embeds,
        text_encoder_hidden_states=hidden,
        do_classifier_free_guidance=True,
    )
    assert hidden.shape == (2, 4 + 77, 1536) and time_embeds.shape == (2, 1280)
    mask = torch.nn.functional.pad(mask, (4, 0), value=True)
    out = real.decoder(
        sample=torch.empty(2, 3, 64, 64, device="meta"),
        timestep=torch.tensor(999, device="meta"),
        encoder_hidden_states=hidden,
        class_labels=time_embeds,
        attention_mask=mask,
    ).sample
    assert out.shape == (2, 6, 64, 64)  # noise + learned variance
    upscaled = real.super_res_last(
        sample=torch.empty(1, 6, 256, 256, device="meta"), timestep=torch.tensor(0, device="meta")
    )
    assert upscaled.sample.shape == (1, 3, 256, 256)


# --------------------------------------------------------------------------- placement, resolution, memory levers


def test_memory_levers_keep_the_images(karlo):
    """Offload (execution device cpu) changes where components wait, not the images; eager attention (UNets and
    text encoder) changes the kernels: images within 1e-4."""
    from diffusers.models.attention_processor import Attention, AttnAddedKVProcessor

    from evalkit.placement import place

    b, p, e = Batch.from_prompts(PROMPTS, seeds=[1, 2, 3]), protocol(karlo, guidance=4.0), embeds(3)
    reference = karlo.decode(e, b, p)
    offloaded = KarloDecoder.tiny(offload=True, max_batch=2)  # two chunks: the chain starts over
    place(offloaded, "cpu", "float32", role="decoder")
    assert [hook.model for hook in offloaded._offload_hooks] == [
        offloaded.text_encoder,
        offloaded.text_proj,
        offloaded.decoder,
        offloaded.super_res_first,
        offloaded.super_res_last,
    ]
    torch.testing.assert_close(offloaded.decode(e, b, p), reference, rtol=0, atol=1e-4)  # max_batch: batch kernels
    unchunked = KarloDecoder.tiny(offload=True)
    place(unchunked, "cpu", None, role="decoder")
    assert torch.equal(unchunked.decode(e, b, p), reference)

    eager = KarloDecoder.tiny(attention="eager")
    assert {type(m.processor) for m in eager.decoder.modules() if isinstance(m, Attention)} == {AttnAddedKVProcessor}
    assert eager.text_encoder.config._attn_implementation == "eager"
    torch.testing.assert_close(eager.decode(e, b, p), reference, rtol=0, atol=1e-4)
    assert torch.equal(KarloDecoder.tiny(attention="sdpa").decode(e, b, p), reference)


def test_levers_and_resolutions_that_do_not_apply_are_clear_errors():
    from evalkit.decoders import load_decoder
    from evalkit.errors import SettingError

    with pytest.raises(SettingError, match="'karlo' has no vae_chunk_size setting: it applies to kandinsky22"):
        load_decoder("karlo", random_init="tiny", vae_chunk_size=2)  # pixel space: no VAE (max_batch bounds a call)
    with pytest.raises(SettingError, match="attention must be one of sdpa, eager"):
        load_decoder("karlo", random_init="tiny", attention="flash")
    with pytest.raises(SettingError, match=r"renders 16×16 \(its decoder alone.*or 32×32.*--resolution 24"):
        load_decoder("karlo", random_init="tiny", resolution=24)
    with pytest.raises(SettingError, match="side 64 or 256; --resolution 128"):
        load_decoder("karlo", random_init="real", resolution=128)
    with pytest.raises(SettingError, match="resolution=16 means super_res=False"):
        KarloDecoder.tiny(resolution=16, super_res=True)


def test_resolution_chooses_the_super_resolution_stage(karlo, tmp_path):
    from evalkit.decoders import load_decoder

    small = load_decoder("karlo", random_init="tiny", resolution=16)
    assert (small.resolution, small.super_res) == (16, False)
    assert load_decoder("karlo", random_init="tiny", resolution=32).super_res
    real = KarloDecoder.random_init("real", device="meta", resolution=64)
    assert (real.resolution, real.super_res_first) == (64, None)
    folder = karlo.save_pretrained(tmp_path / "karlo")
    assert KarloDecoder.from_pretrained(folder, resolution=16).super_res is False
    assert KarloDecoder.from_pretrained(folder, resolution=32).resolution == 32


def test_half_precision_files_load_as_float32(tmp_path):
    """Every component, the transformers text encoder too (transformers 5 would keep the files' dtype): the
    stack loads in one precision, and placement casts it."""
    half = KarloDecoder.tiny().to(torch.float16)
    folder = half.save_pretrained(tmp_path / "half")
    loaded = KarloDecoder.from_pretrained(folder)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32} and loaded.compute_dtype == "float32"
