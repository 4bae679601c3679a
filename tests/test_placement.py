"""Placement (``evalkit run --device / --dtype``) of every registered prior and scorer and of both text encoders.

Each plugin is built with its ``tiny()``. The modules a placement must reach are found by an independent walk
over the plugin's attributes (not its ``torch_modules()``), so a module a plugin forgets to declare fails here.
On the CPU every dtype a plugin declares is computed for real (finite, close to float32); on ``meta`` only the
placement is checked; the ``gpu`` test repeats the CPU checks on CUDA where there is a device.
"""

from __future__ import annotations

import types

import pytest
import torch

from evalkit.contracts import Batch
from evalkit.errors import SettingError
from evalkit.placement import DTYPES, place
from evalkit.registry import PRIORS, SCORERS

PROMPTS = [
    "a red circle and a blue square",
    "a striped star and a dotted square",
    "a big triangle and a small circle",
    "a small circle and a big yellow square",
]
#: how far a half-precision result may be from the float32 one (relative norm of the difference; scores: absolute)
TOLERANCE = 0.05


def _world_clip():
    from evalkit.world.models.clip import WorldCLIP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return WorldCLIP.tiny().eval()


def _hf_text_encoder():
    import tempfile

    from evalkit.priors.real import HFTextEncoder, tiny_checkpoint

    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory(prefix="evalkit-placement-") as tmp:
        return HFTextEncoder.from_pretrained(tiny_checkpoint(tmp, "eclipse"))


TEXT_ENCODERS = {"world-clip": _world_clip, "hf-clip-text": _hf_text_encoder}
PLUGINS = (
    [("prior", n) for n in PRIORS.names()]
    + [("scorer", n) for n in SCORERS.names()]
    + [("text-encoder", n) for n in TEXT_ENCODERS]
)


def build(kind: str, name: str):
    if kind == "text-encoder":
        return TEXT_ENCODERS[name]()
    plugin = (PRIORS if kind == "prior" else SCORERS).get(name).tiny()
    if hasattr(plugin, "num_inference_steps"):  # diffusion priors: a few steps run the whole sampler (and fast)
        plugin.num_inference_steps = 3
    return plugin


def label(plugin) -> str:
    return getattr(plugin, "name", "") or type(plugin).__name__


def batch(n: int = 3) -> Batch:
    return Batch.from_prompts(PROMPTS[:n], list(range(42, 42 + n)), category="color")


def inputs(scorer, n: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if scorer.reads == "embeddings":
        return torch.randn(n, scorer.embedding_dim, generator=generator)
    return torch.rand(n, 3, 32, 32, generator=generator)


def run(kind: str, plugin, text: dict | None = None) -> torch.Tensor:
    """What the plugin computes on a tiny batch, as one float32 CPU tensor (scores: every row's score and
    question probabilities). ``text``: text encodings handed to a prior in the batch, as the run does."""
    if kind == "prior":
        b = batch(3)
        b.text.update(text or {})
        out = plugin.predict(b)
        assert out.dtype == torch.float32 and out.shape == (3, plugin.embedding_dim)
        return out.cpu()
    if kind == "text-encoder":
        encoding = plugin.encode_text(PROMPTS[:3])
        assert encoding.text_embeds.dtype == torch.float32 and encoding.text_hidden.dtype == torch.float32
        return torch.cat(
            [encoding.text_embeds.flatten(), encoding.text_hidden.flatten(), encoding.attention_mask.flatten().float()]
        ).cpu()
    x = inputs(plugin)
    rows = (plugin.score_embeddings if plugin.reads == "embeddings" else plugin.score)(x, batch(len(x)))
    return torch.tensor(
        [v for row in rows for v in (row["score"], *(q["p"] for q in row.get("questions", ())))], dtype=torch.float32
    )


def close(kind: str, out: torch.Tensor, ref: torch.Tensor) -> bool:
    if kind == "scorer":
        return out.shape == ref.shape and bool((out - ref).abs().max() <= TOLERANCE) if len(ref) else len(out) == 0
    return out.shape == ref.shape and ((out - ref).norm() / ref.norm().clamp_min(1e-12)).item() <= TOLERANCE


# --------------------------------------------------------------------------- an independent module walk

_LEAVES = (
    str,
    bytes,
    int,
    float,
    bool,
    complex,
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


def reachable_modules(obj, max_depth: int = 4) -> list[torch.nn.Module]:
    """Every ``nn.Module`` reachable from ``obj`` through attributes (``vars()``), lists, tuples, sets and dicts,
    nested objects included, down to ``max_depth`` steps (a module's own submodules count through its
    parameters and buffers; its plain attributes are walked too)."""
    found: list[torch.nn.Module] = []
    seen: set[int] = set()

    def visit(value, depth: int) -> None:
        if depth > max_depth or isinstance(value, _LEAVES) or id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, torch.nn.Module):
            found.append(value)
        if isinstance(value, dict):
            items = list(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
        else:
            try:
                items = list(vars(value).values())
            except TypeError:  # no __dict__ (slots, C types)
                return
        for item in items:
            visit(item, depth + 1)

    visit(obj, 0)
    return found


def misplaced(plugin, device: str, dtype: str) -> list[str]:
    """``module.tensor: where it is`` for each parameter or buffer of a reachable module not on ``device`` or,
    floating, not in ``dtype``."""
    wanted = getattr(torch, dtype)
    wrong = []
    for module in reachable_modules(plugin):
        for name, tensor in (*module.named_parameters(), *module.named_buffers()):
            if tensor.device.type != torch.device(device).type or (
                tensor.is_floating_point() and tensor.dtype != wanted
            ):
                wrong.append(f"{type(module).__name__}.{name}: {tensor.device} {tensor.dtype}")
    return wrong


def has_modules(kind: str, name: str) -> bool:
    return not (kind == "scorer" and name in ("analytic", "dummy"))


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("kind,name", PLUGINS, ids=[f"{k}-{n}" for k, n in PLUGINS])
def test_declared_dtypes(kind, name):
    plugin = build(kind, name)
    supported = tuple(plugin.supported_dtypes)
    assert supported and supported[0] == "float32" and set(supported) <= set(DTYPES), supported
    if not has_modules(kind, name):
        assert supported == ("float32",), "a plugin without weights computes in float32 only"


@pytest.mark.parametrize("kind,name", PLUGINS, ids=[f"{k}-{n}" for k, n in PLUGINS])
def test_meta_placement_reaches_every_module(kind, name):
    plugin = build(kind, name)
    run(kind, plugin)  # state derived on first use (folded trunks, cached encodings) exists before placement
    modules = reachable_modules(plugin)
    assert bool(modules) == has_modules(kind, name), [type(m).__name__ for m in modules]
    for dtype in plugin.supported_dtypes:
        record = place(plugin, "meta", dtype)
        assert record["device"] == "meta"
        assert misplaced(plugin, "meta", dtype) == [], f"{label(plugin)} in {dtype} on meta"


@pytest.mark.parametrize("kind,name", PLUGINS, ids=[f"{k}-{n}" for k, n in PLUGINS])
def test_unsupported_dtype_is_refused_naming_the_plugin(kind, name):
    from evalkit.placement import modules_of

    plugin = build(kind, name)
    if not modules_of(plugin):  # nothing to cast (the analytic scorer): any --dtype leaves it as it is
        for dtype in DTYPES:
            assert place(plugin, "cpu", dtype, role=kind)["dtype"] == "none"
        return
    refused = [d for d in DTYPES if d not in plugin.supported_dtypes]
    if not refused:  # every dtype declared: a narrower declaration on this instance goes through the same check
        plugin.supported_dtypes = ("float32",)
        refused = [d for d in DTYPES if d != "float32"]
    for dtype in refused:
        with pytest.raises(SettingError, match=label(plugin)) as error:
            place(plugin, "cpu", dtype, role=kind)
        assert dtype in str(error.value)
    assert misplaced(plugin, "cpu", "float32") == []  # nothing was cast before the refusal


@pytest.mark.parametrize("kind,name", PLUGINS, ids=[f"{k}-{n}" for k, n in PLUGINS])
def test_cpu_placement_computes_in_every_declared_dtype(kind, name):
    plugin = build(kind, name)
    reference = run(kind, plugin)
    assert torch.isfinite(reference).all()
    for dtype in ("float32", None):  # float32 (what tiny builds load in) or the loaded precision: the same bits
        place(plugin, "cpu", dtype)
        assert torch.equal(run(kind, plugin), reference), f"{label(plugin)}: placed in {dtype} on the CPU"
    encoder = getattr(plugin, "clip", None) if kind == "prior" and plugin.text_encoders else None
    text = {plugin.text_encoders[0]: encoder.encode_text(PROMPTS[:3])} if encoder is not None else None
    for dtype in sorted(plugin.supported_dtypes[1:], key=("float16", "bfloat16").index):  # the finer cast first
        place(plugin, "cpu", dtype)
        assert misplaced(plugin, "cpu", dtype) == []
        out = run(kind, plugin)
        assert torch.isfinite(out).all() and close(kind, out, reference), (
            f"{label(plugin)} in {dtype}: {out} vs {reference}"
        )
        if text is not None:  # float32 encodings made before the placement, as the run may hand them
            out = run(kind, plugin, text)
            assert torch.isfinite(out).all() and close(kind, out, reference), f"{label(plugin)} in {dtype}, given text"


@pytest.mark.gpu
@pytest.mark.parametrize("kind,name", PLUGINS, ids=[f"{k}-{n}" for k, n in PLUGINS])
def test_cuda_placement(kind, name):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    plugin = build(kind, name)
    reference = run(kind, plugin)
    encoder = getattr(plugin, "clip", None) if kind == "prior" and plugin.text_encoders else None
    text = {plugin.text_encoders[0]: encoder.encode_text(PROMPTS[:3])} if encoder is not None else None  # on the CPU
    for dtype in plugin.supported_dtypes:
        record = place(plugin, "cuda", dtype)
        assert record["device"] == "cuda" and misplaced(plugin, "cuda", dtype) == []
        out = run(kind, plugin)
        assert torch.isfinite(out).all() and close(kind, out, reference), f"{label(plugin)} in {dtype} on cuda"
        if text is not None:
            out = run(kind, plugin, text)
            assert torch.isfinite(out).all() and close(kind, out, reference), f"{label(plugin)} in {dtype}, CPU text"
