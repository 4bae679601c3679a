"""Every registered decoder under evalkit.placement.place: what ``meta`` + a dtype reaches (found by a walk of its
own, not by ``torch_modules()``), refused dtypes, CPU numerics, and (``-m gpu``) the same on CUDA."""

import inspect
import types

import pytest
import torch

from evalkit.contracts import Batch, Protocol
from evalkit.errors import SettingError
from evalkit.placement import DTYPES, place
from evalkit.registry import DECODERS

#: decoders whose precision is not their weights': they keep float32 weights and sample under autocast
WEIGHTS_STAY_FLOAT32 = {"synth"}
NAMES = [n for n in DECODERS.names() if callable(getattr(DECODERS.get(n), "tiny", None))]
CASES = [(n, d) for n in NAMES for d in DECODERS.get(n).supported_dtypes]
UNSUPPORTED = [(n, d) for n in NAMES for d in (*DTYPES, "float64") if d not in DECODERS.get(n).supported_dtypes]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models are overhead-bound; and immune to a busy machine
    yield
    torch.set_num_threads(before)


def tiny(name):
    return DECODERS.get(name).tiny()


def images(decoder, n=2, steps=2):
    embeds = torch.randn(n, decoder.embedding_dim, generator=torch.Generator().manual_seed(7))
    batch = Batch.from_prompts([f"a red cube and a blue ball {i}" for i in range(n)], seeds=list(range(3, 3 + n)))
    guidance = max(2.0, float(decoder.default_guidance_scale))
    return decoder.decode(
        embeds, batch, Protocol(decoder.name, steps, guidance, decoder.resolution, images_per_prompt=1)
    )


def reachable_modules(root, depth: int = 4) -> list:
    """Every ``nn.Module`` reachable from ``root`` through attributes (``vars``), lists, tuples, sets and dicts,
    at most ``depth`` steps away: registered or not (a module in a plain list is not in ``parameters()``)."""
    found, seen = [], set()
    leaves = (
        str,
        bytes,
        int,
        float,
        bool,
        type(None),
        torch.Tensor,
        torch.dtype,
        torch.device,
        type,
        types.ModuleType,
        types.FunctionType,
        types.MethodType,
        types.BuiltinFunctionType,
    )

    def visit(value, level: int) -> None:
        if id(value) in seen or level > depth:
            return
        seen.add(id(value))
        if isinstance(value, torch.nn.Module):
            found.append(value)
        if isinstance(value, leaves) or inspect.isroutine(value):
            return
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            children = list(value)
        elif hasattr(value, "__dict__"):
            children = list(vars(value).values())
        else:
            return
        for child in children:
            visit(child, level + 1)

    visit(root, 0)
    return found


def all_tensors(root) -> list[tuple[str, torch.Tensor]]:
    out = []
    for module in reachable_modules(root):
        out += [(f"{type(module).__name__}.{k}", t) for k, t in (*module.named_parameters(), *module.named_buffers())]
    return out


def test_the_walk_finds_modules_that_are_not_registered():
    class Holder:
        def __init__(self):
            self.net = torch.nn.Linear(2, 2)
            self.stages = [{"proj": torch.nn.Linear(2, 3)}, (torch.nn.Conv2d(1, 1, 1),)]

    found = {type(m).__name__ for m in reachable_modules(Holder())}
    assert found == {"Linear", "Conv2d"} and len(reachable_modules(Holder())) == 3


@pytest.mark.parametrize("name, dtype", CASES)
def test_meta_placement_reaches_every_tensor(name, dtype):
    decoder = tiny(name)
    tensors = all_tensors(decoder)
    assert tensors, f"{name}: the walk found no tensors"
    record = place(decoder, "meta", dtype, role="decoder")
    assert record["device"] == "meta" and record["dtype"] == dtype and record["cast"]
    expected = torch.float32 if name in WEIGHTS_STAY_FLOAT32 else getattr(torch, dtype)
    wrong = [
        (k, str(t.device), t.dtype)
        for k, t in all_tensors(decoder)
        if t.device.type != "meta" or (t.is_floating_point() and t.dtype != expected)
    ]
    assert not wrong, f"{name} on meta/{dtype}: {wrong[:5]} (of {len(wrong)})"
    assert decoder.compute_dtype == dtype


@pytest.mark.parametrize("name, dtype", UNSUPPORTED)
def test_a_dtype_the_decoder_does_not_declare_is_refused(name, dtype):
    decoder = tiny(name)
    with pytest.raises(SettingError, match=dtype):
        place(decoder, "cpu", dtype, role="decoder")
    assert all(t.device.type == "cpu" for _, t in all_tensors(decoder))  # refused before anything moved


@pytest.mark.parametrize("name", NAMES)
def test_float32_placement_on_the_cpu_gives_the_same_images(name):
    decoder = tiny(name)
    before = images(decoder)
    place(decoder, "cpu", "float32", role="decoder")
    assert decoder.compute_dtype == "float32"
    assert torch.equal(images(decoder), before)


@pytest.mark.parametrize("name", [n for n in NAMES if "bfloat16" in DECODERS.get(n).supported_dtypes])
def test_bfloat16_on_the_cpu_gives_finite_images_in_range(name):
    decoder = tiny(name)
    reference = images(decoder)
    place(decoder, "cpu", "bfloat16", role="decoder")
    out = images(decoder)
    assert out.shape == reference.shape and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert 0 < (out - reference).abs().mean() < 0.1  # it really ran in bfloat16, and stayed near float32


def test_synth_float32_placement_is_the_old_float32_load(tmp_path):
    """The shipped synth config samples in bfloat16: placing a copy in float32 gives the images the old
    ``load_decoder("synth", dtype="float32")`` (a float32 sampling config) gave; None keeps the config's."""
    from evalkit.decoders.synth import SynthDecoder

    SynthDecoder(SynthDecoder.tiny_config()).save_pretrained(tmp_path / "w")  # float32 config
    bf16 = SynthDecoder.from_pretrained(tmp_path / "w", sampling_dtype="bfloat16")
    bf16.save_pretrained(tmp_path / "bf16")
    old = images(SynthDecoder.from_pretrained(tmp_path / "bf16", sampling_dtype="float32"))
    kept = SynthDecoder.from_pretrained(tmp_path / "bf16")
    assert place(kept, "cpu", None, role="decoder")["dtype"] == "bfloat16"
    assert not torch.equal(images(kept), old)
    placed = SynthDecoder.from_pretrained(tmp_path / "bf16")
    assert place(placed, "cpu", "float32", role="decoder") == {"device": "cpu", "dtype": "float32", "cast": True}
    assert placed.config.sampling_dtype == "float32" and all(p.dtype == torch.float32 for p in placed.parameters())
    assert torch.equal(images(placed), old)


def test_dummy_refuses_the_levers_and_other_resolutions():
    from evalkit.decoders import load_decoder

    for lever, value in (("offload", True), ("attention", "eager"), ("vae_chunk_size", 2)):
        with pytest.raises(SettingError, match=f"'dummy' has no {lever} setting: it applies to .*kandinsky22"):
            load_decoder("dummy", **{lever: value})
    with pytest.raises(SettingError, match="renders 16×16 only; --resolution 32"):
        load_decoder("dummy", resolution=32)
    assert load_decoder("dummy", resolution=16).resolution == 16
    with pytest.raises(SettingError, match="placement.place"):
        load_decoder("dummy", dtype="float32")  # the old keyword: placement chooses the dtype now


# --------------------------------------------------------------------------- CUDA (pytest -m gpu on a GPU machine)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_on_cuda_every_supported_dtype(name):
    reference = images(tiny(name))  # float32 on the CPU
    for dtype in DECODERS.get(name).supported_dtypes:
        decoder = tiny(name)
        record = place(decoder, "cuda", dtype, role="decoder")
        assert record["device"] == "cuda" and decoder.compute_dtype == dtype
        expected = torch.float32 if name in WEIGHTS_STAY_FLOAT32 else getattr(torch, dtype)
        wrong = [
            k
            for k, t in all_tensors(decoder)
            if t.device.type != "cuda" or (t.is_floating_point() and t.dtype != expected)
        ]
        assert not wrong, f"{name} on cuda/{dtype}: {wrong[:5]}"
        out = images(decoder)
        assert out.shape == reference.shape and out.device.type == "cpu" and torch.isfinite(out).all()
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(images(decoder), out)  # deterministic on the GPU too
        if dtype == "float32":  # other kernels (TF32 convolutions), the same images up to rounding
            assert (out - reference).abs().mean() < 5e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", [n for n in NAMES if n in ("karlo", "kandinsky22")])
def test_offload_on_cuda_gives_the_resident_images_and_leaves_the_weights_on_the_cpu(name):
    resident = tiny(name)
    place(resident, "cuda", "float16", role="decoder")
    offloaded = DECODERS.get(name).tiny(offload=True)
    place(offloaded, "cuda", "float16", role="decoder")
    assert all(t.device.type == "cpu" for _, t in all_tensors(offloaded))
    torch.testing.assert_close(images(offloaded), images(resident), rtol=0, atol=1e-3)
    assert all(t.device.type == "cpu" for _, t in all_tensors(offloaded))  # sent back after decoding
