"""One small generic registry: names map to lazy ``"module:attribute"`` targets.

Nothing is imported until :meth:`Registry.get` is called, so listing plugins costs no
torch import. Third-party packages can add entries through entry points in the groups
``evalkit.priors``, ``evalkit.decoders``, ``evalkit.scorers`` and ``evalkit.suites``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from evalkit.errors import UnknownNameError


@dataclass(frozen=True)
class Entry:
    name: str
    target: str | Any  # "package.module:Attribute" or the object itself
    description: str = ""
    #: what is known without importing (built-ins declare it): priors and decoders ``space`` and ``dim`` (the
    #: embedding they produce / consume), priors ``method`` (eclipse | projection | diffusion | ...) and
    #: ``weights`` (``"shipped"`` or the environment variable naming their folder), decoders ``steps``,
    #: ``guidance`` and ``resolution`` (their defaults)
    meta: dict = field(default_factory=dict, hash=False, compare=False)


class Registry:
    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._entry_points_loaded = False

    def register(self, name: str, target: str | Any, description: str = "", *, replace: bool = False, **meta):
        """Register ``target`` under ``name`` (``meta``: see :class:`Entry`)."""
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered (pass replace=True to override)")
        self._entries[name] = Entry(name, target, description, meta)
        return target

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or not self.entry_point_group:
            return
        self._entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                self._entries[ep.name] = Entry(ep.name, ep.value, f"(plugin from {ep.dist.name if ep.dist else '?'})")

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def entry(self, name: str) -> Entry:
        self._load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def get(self, name: str) -> Any:
        """The registered object (imported on first use)."""
        target = self.entry(name).target
        if isinstance(target, str):
            module_name, _, attribute = target.partition(":")
            obj = importlib.import_module(module_name)
            for part in attribute.split(".") if attribute else []:
                obj = getattr(obj, part)
            return obj
        return target

    def random_builder(self, name: str, size: str):
        """``random_init`` of plugin ``name`` (its architecture with random weights: ``size`` real | tiny);
        an :class:`EvalkitError` naming the plugins of this kind that have one."""
        from evalkit.errors import EvalkitError

        if size not in RANDOM_INIT_SIZES:
            raise EvalkitError(f"--random-init must be one of {', '.join(RANDOM_INIT_SIZES)} (got {size!r})")
        builder = getattr(self.get(name), "random_init", None)
        if callable(builder):
            return builder
        supported = []
        for other in self.names():
            try:
                if callable(getattr(self.get(other), "random_init", None)):
                    supported.append(other)
            except Exception:  # a plugin that does not even import is not one to suggest
                continue
        raise EvalkitError(
            f"{self.kind} {name!r} has no random-weight build, so --random-init does not apply to it; "
            f"{self.kind}s that have one: {', '.join(supported) or '(none)'}"
        )

    def check(self, names: list[str]) -> None:
        """Raise for the first unknown name, before any work starts."""
        for name in names:
            self.entry(name)


#: sizes of ``random_init`` builds (``--random-init``): the public architecture, or the tests' tiny one
RANDOM_INIT_SIZES = ("real", "tiny")

PRIORS = Registry("prior", "evalkit.priors")
DECODERS = Registry("decoder", "evalkit.decoders")
SCORERS = Registry("scorer", "evalkit.scorers")
SUITES = Registry("suite", "evalkit.suites")

REGISTRIES = {"priors": PRIORS, "decoders": DECODERS, "scorers": SCORERS, "suites": SUITES}

# Built-in plugins. Keep these as strings: listing must not import torch.
WORLD, L14, BIGG = "synth-clip", "clip-vit-l-14", "clip-vit-bigg-14"  # the embedding spaces of the built-ins
_world = dict(space=WORLD, dim=128, weights="shipped")
PRIORS.register(
    "dummy",
    "evalkit.priors.dummy:DummyPrior",
    "template prior: a seeded linear map of a hashed bag of words",
    space="dummy",
    dim=16,
    weights="none",
)
PRIORS.register(
    "oracle",
    "evalkit.priors.calibration:OraclePrior",
    "calibration ceiling: CLIP image embedding of a render matching the prompt (synthetic world)",
    **_world,
    method="calibration",
)
PRIORS.register(
    "text",
    "evalkit.priors.calibration:TextPrior",
    "calibration: the prompt's CLIP text embedding used as the image embedding",
    **_world,
    method="calibration",
)
PRIORS.register(
    "none",
    "evalkit.priors.calibration:NonePrior",
    "calibration floor: the mean image embedding, no prompt information",
    **_world,
    method="calibration",
)
PRIORS.register(
    "eclipse",
    "evalkit.priors.eclipse:EclipsePrior",
    "ECLIPSE time-free prior (projection + λ·text→image contrastive), shipped for the synthetic world",
    **_world,
    method="eclipse",
)
PRIORS.register(
    "eclipse-large",
    "evalkit.priors.eclipse:EclipseLargePrior",
    "ECLIPSE prior, larger size (size ladder)",
    **_world,
    method="eclipse",
)
PRIORS.register(
    "eclipse-hn",
    "evalkit.priors.eclipse:EclipseHardNegativePrior",
    "ECLIPSE prior trained with attribute-swapped captions as extra contrastive negatives",
    **_world,
    method="eclipse",
)
PRIORS.register(
    "projection",
    "evalkit.priors.projection:ProjectionPrior",
    "the ECLIPSE network trained with the projection (MSE) loss alone (λ = 0)",
    **_world,
    method="projection",
)
PRIORS.register(
    "diffusion",
    "evalkit.priors.diffusion:DiffusionPrior",
    "diffusion prior: diffusers PriorTransformer, 1000-step linear DDPM, 25 DDIM steps, CFG 4.0",
    **_world,
    method="diffusion",
)
PRIORS.register(
    "diffusion-xl",
    "evalkit.priors.diffusion:DiffusionXLPrior",
    "diffusion prior, ≥ 10× larger (size ladder)",
    **_world,
    method="diffusion",
)
PRIORS.register(
    "eclipse-kandinsky22",
    "evalkit.priors.real:EclipseKandinskyV22Prior",
    "ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior (time-free, 1280-d ViT-bigG/14; pairs with kandinsky22): "
    "--prior-path eclipse-kandinsky22=DIR or $EVALKIT_ECLIPSE_KANDINSKY22_PRIOR_DIR; text encoder from "
    "$EVALKIT_KANDINSKY22_PRIOR_DIR",
    space=BIGG,
    dim=1280,
    method="eclipse",
    weights="EVALKIT_ECLIPSE_KANDINSKY22_PRIOR_DIR",
)
PRIORS.register(
    "eclipse-karlo",
    "evalkit.priors.real:EclipseKarloPrior",
    "ECLIPSE-Community/ECLIPSE_Karlo_Prior (time-free, 768-d ViT-L/14; pairs with karlo): --prior-path "
    "eclipse-karlo=DIR or $EVALKIT_ECLIPSE_KARLO_PRIOR_DIR; text encoder from $EVALKIT_KARLO_DIR",
    space=L14,
    dim=768,
    method="eclipse",
    weights="EVALKIT_ECLIPSE_KARLO_PRIOR_DIR",
)
PRIORS.register(
    "kandinsky22-prior",
    "evalkit.priors.real:Kandinsky22Prior",
    "kandinsky-community/kandinsky-2-2-prior (diffusion, UnCLIP 25 steps, CFG 4.0, 1280-d; pairs with "
    "kandinsky22): --prior-path kandinsky22-prior=DIR or $EVALKIT_KANDINSKY22_PRIOR_DIR",
    space=BIGG,
    dim=1280,
    method="diffusion",
    weights="EVALKIT_KANDINSKY22_PRIOR_DIR",
)
PRIORS.register(
    "karlo-prior",
    "evalkit.priors.real:KarloPrior",
    "kakaobrain/karlo-v1-alpha prior/ (diffusion, UnCLIP 25 steps, CFG 4.0, 768-d; pairs with karlo): "
    "--prior-path karlo-prior=DIR or $EVALKIT_KARLO_DIR",
    space=L14,
    dim=768,
    method="diffusion",
    weights="EVALKIT_KARLO_DIR",
)
DECODERS.register(
    "karlo",
    "evalkit.decoders.karlo:KarloDecoder",
    "Karlo (unCLIP, kakaobrain/karlo-v1-alpha) decoder: raw CLIP ViT-L/14 image embeddings + prompt → 64×64 → "
    "256×256 (local folder via --decoder-path or $EVALKIT_KARLO_DIR)",
    space=L14,
    dim=768,
    steps=25,
    guidance=7.5,
    resolution="256 px",
    weights="EVALKIT_KARLO_DIR",
)
DECODERS.register(
    "kandinsky22",
    "evalkit.decoders.kandinsky:Kandinsky22Decoder",
    "Kandinsky 2.2 decoder (local kandinsky-community/kandinsky-2-2-decoder via --decoder-path or "
    "$EVALKIT_KANDINSKY22_DIR): raw 1280-d CLIP ViT-bigG/14 image embeddings → 512×512, DDPM 50 steps, CFG 4.0",
    space=BIGG,
    dim=1280,
    steps=50,
    guidance=4.0,
    resolution="512 px (--resolution: multiples of 64)",
    weights="EVALKIT_KANDINSKY22_DIR",
)
DECODERS.register(
    "dummy",
    "evalkit.decoders.dummy:DummyDecoder",
    "template decoder: embeddings to colour blobs, per-image seeded noise",
    space="dummy",
    dim=16,
    steps=1,
    guidance=1.0,
    resolution="16 px",
    weights="none",
)
DECODERS.register(
    "synth",
    "evalkit.decoders.synth:SynthDecoder",
    "embedded 32×32 pixel diffusion decoder conditioned on the world CLIP's image embedding (unCLIP / "
    "Kandinsky 2.2 style)",
    space=WORLD,
    dim=128,
    steps=10,
    guidance=2.0,
    resolution="32 px",
    weights="shipped",
)
SCORERS.register(
    "analytic",
    "evalkit.scorers.analytic:AnalyticScorer",
    "HRS-style analytic scorer for the synthetic world: segment, read hue / mask geometry / pattern",
)
SCORERS.register(
    "binding",
    "evalkit.scorers.binding:BindingScorer",
    "embedded VQA model of the synthetic world: P(yes) per noun phrase, product per image (B-VQA style)",
)
SCORERS.register(
    "blip-vqa",
    "evalkit.scorers.blip_vqa:BlipVQAScorer",
    "T2I-CompBench B-VQA on BLIP-VQA in T2I-CompBench's convention ([ENC] question, 480 px; local "
    "Salesforce/blip-vqa-capfilt-large via $EVALKIT_BLIP_VQA_DIR or --scorer-path): P(yes) per noun phrase, "
    "product per image",
)
SCORERS.register(
    "blip-vqa-transformers",
    "evalkit.scorers.blip_vqa:BlipVQATransformersScorer",
    "blip-vqa in transformers' own conventions ([CLS] question, the image processor's 384 px; scorer version 1, "
    "evalkit's blip-vqa before version 2) instead of T2I-CompBench's ([ENC] question, 480 px)",
)
SCORERS.register(
    "clipscore",
    "evalkit.scorers.clipscore:CLIPScoreScorer",
    "CLIPScore: image–prompt cosine in the world CLIP (score = cosine clipped to [0, 1]; torchmetrics "
    "max(100·cos, 0) per row)",
)
SCORERS.register(
    "embedding-cosine",
    "evalkit.scorers.embedding:EmbeddingCosineScorer",
    "embedding level, no decoding: (1 + cosine) / 2 between the prior's embedding and the world CLIP's embedding "
    "of the item's own render (synthetic suites)",
)
SCORERS.register(
    "dummy",
    "evalkit.scorers.dummy:DummyScorer",
    "template scorer: mean brightness as a stand-in probability per noun phrase",
)
SCORERS.register(
    "t2i-spatial",
    "evalkit.scorers.spatial:T2ISpatialScorer",
    "T2I-CompBench 2-D spatial score (UniDet rules) on an OWLv2 detector, not UniDet (local "
    "google/owlv2-base-patch16-ensemble via $EVALKIT_OWLV2_DIR or --scorer-path)",
)
SCORERS.register(
    "t2i-clip",
    "evalkit.scorers.t2i_clip:T2IClipScorer",
    "T2I-CompBench non-spatial CLIPScore: plain image–prompt cosine of CLIP ViT-B/32 (local "
    "openai/clip-vit-base-patch32 via $EVALKIT_CLIP_VIT_B32_DIR or --scorer-path)",
)
SCORERS.register(
    "t2i-complex",
    "evalkit.scorers.t2i_complex:T2IComplexScorer",
    "T2I-CompBench 3-in-1 (complex): blip-vqa + t2i-spatial and/or t2i-clip by prompt type (--scorer-path "
    "t2i-complex=DIR holding blip-vqa/, t2i-spatial/, t2i-clip/, or each part's variable)",
)

for _family in ("color", "shape", "texture"):
    SUITES.register(
        f"synth-{_family}",
        f"evalkit.suites.synth:synth_{_family}",
        f"synthetic world, {_family} binding (train/dev/val; val 200 seen + 100 unseen)",
    )
    SUITES.register(
        f"t2i-compbench-{_family}",
        f"evalkit.suites.t2i_compbench:t2i_compbench_{_family}",
        f"T2I-CompBench {_family} prompts (val 200 seen + 100 unseen; train), read from the prompt directory",
    )
del _family
SUITES.register(
    "synth-spatial",
    "evalkit.suites.synth:synth_spatial",
    "synthetic world, spatial binding: left / right / top / bottom of (train/dev/val; val 200 seen + 100 unseen)",
)
SUITES.register(
    "t2i-compbench-spatial",
    "evalkit.suites.t2i_compbench_relations:t2i_compbench_spatial",
    "T2I-CompBench 2-D spatial prompts (val 300, train 700; no seen/unseen), read from the prompt directory",
)
SUITES.register(
    "t2i-compbench-non-spatial",
    "evalkit.suites.t2i_compbench_relations:t2i_compbench_non_spatial",
    "T2I-CompBench non-spatial (action) prompts (val 300, train 700; no seen/unseen), read from the prompt directory",
)
SUITES.register(
    "t2i-compbench-complex",
    "evalkit.suites.t2i_compbench_relations:t2i_compbench_complex",
    "T2I-CompBench complex prompts (val 300, train 700; each typed spatial / action / spatial-action for 3-in-1), "
    "read from the prompt directory",
)


def space_of(registry: Registry, name: str) -> str | None:
    """The embedding space a registered prior or decoder declares (None: a plugin that declares none)."""
    return registry.entry(name).meta.get("space")


def resolve_prior(name: str, decoder: str) -> str:
    """The registered prior that ``name`` means beside ``decoder``, from the registry's metadata (nothing loaded).

    ``eclipse``, ``projection`` and ``diffusion`` name a method and the decoder names the space: ``eclipse``
    with ``karlo`` is ``eclipse-karlo``, ``diffusion`` with ``kandinsky22`` is ``kandinsky22-prior``, and with
    ``synth`` the shipped world priors. A prior whose declared space is not the decoder's is an
    :class:`~evalkit.errors.EmbeddingContractError` naming the priors that pair with the decoder. Plugins that
    declare no space pass (their embeddings are checked once loaded).
    """
    from evalkit.errors import EmbeddingContractError

    entry, target = PRIORS.entry(name), DECODERS.entry(decoder)
    space, wanted = entry.meta.get("space"), target.meta.get("space")
    if space is None or wanted is None or space == wanted:
        return name
    method = entry.meta.get("method")
    same = [e.name for e in PRIORS.entries() if e.meta.get("space") == wanted]
    if method == name:  # a method name: the prior of that method in the decoder's space
        matches = [n for n in same if PRIORS.entry(n).meta.get("method") == method]
        if len(matches) == 1:
            return matches[0]
    why = f"no {method} prior is registered for {wanted!r}" if method == name else f"{name!r} is a prior of {space!r}"
    dim, want_dim = entry.meta.get("dim"), target.meta.get("dim")
    kin = [n for n in same if method and PRIORS.entry(n).meta.get("method") == method]
    hint = f" Did you mean {', '.join(repr(n) for n in kin)}?" if kin else ""
    raise EmbeddingContractError(
        f"prior {name!r} ({space}, {dim}-d) cannot feed decoder {decoder!r} ({wanted}, {want_dim}-d): {why}.{hint} "
        f"Priors for {decoder}: {', '.join(same) or '(none registered)'}."
    )


def register_plugin(spec: str) -> tuple[Registry, str, bool]:
    """``--plugin [NAME=]module:Class``: register a class for this process (no packaging), in the registry its
    base class says (Prior, Decoder, Scorer or Suite); NAME defaults to the class's ``name``. Returns
    (registry, name, whether it was new). The current folder is importable, as under ``python -m``."""
    import os
    import sys

    from evalkit.errors import SettingError

    name, sep, target = spec.partition("=")
    if not sep:
        name, target = "", spec
    module_name, colon, attribute = target.strip().partition(":")
    if not colon or not module_name or not attribute:
        raise SettingError(f"--plugin {spec!r}: expected [NAME=]module:Class, e.g. --plugin mine=my_priors:MyPrior")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ImportError as error:
        raise SettingError(f"--plugin {spec!r}: cannot import module {module_name!r} ({error})") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise SettingError(f"--plugin {spec!r}: module {module_name!r} has no {attribute!r}")
        obj = getattr(obj, part)
    from evalkit.contracts import Decoder, Prior, Scorer, Suite

    kinds = ((Prior, PRIORS), (Decoder, DECODERS), (Scorer, SCORERS), (Suite, SUITES))
    registry = next((reg for base, reg in kinds if isinstance(obj, type) and issubclass(obj, base)), None)
    if registry is None:
        raise SettingError(
            f"--plugin {spec!r}: {attribute} is not a subclass of evalkit.contracts Prior, Decoder, Scorer or Suite"
        )
    name = name.strip() or str(getattr(obj, "name", "") or "")
    if not name:
        raise SettingError(f"--plugin {spec!r}: {attribute} has no `name`; give one: --plugin NAME={target}")
    if name in registry:
        existing = registry.entry(name).target
        if existing is obj:
            return registry, name, False
        raise SettingError(
            f"--plugin {spec!r}: {registry.kind} {name!r} is already registered; register it under "
            f"another name: --plugin OTHER={target}"
        )
    meta = {
        key: getattr(obj, attr)
        for key, attr in (("space", "embedding_space"), ("dim", "embedding_dim"))
        if getattr(obj, attr, None)
    }
    registry.register(name, obj, f"(--plugin {target})", **meta)
    return registry, name, True


def weights_status(entry: Entry) -> str:
    """Whether a prior's or decoder's weights are here, from its metadata (nothing imported): ``shipped``,
    ``none needed``, ``$VAR=DIR`` when the variable names an existing folder, else how to point at them."""
    import os

    weights = entry.meta.get("weights")
    if weights is None:
        return "?"
    if weights == "shipped":
        return "shipped"
    if weights == "none":
        return "none needed"
    folder = os.environ.get(weights, "").strip()
    if folder and os.path.isdir(folder):
        return f"${weights} = {folder}"
    return f"missing: ${weights} is not a folder" if folder else f"missing: set ${weights}"
