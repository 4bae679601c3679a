"""FID and KID of image sets in a named feature space, each computed with clean-fid and with torchmetrics.

**Feature network.** Inception-v3 is not available offline (clean-fid and torch-fidelity download its
weights on first use), so the default features are the world CLIP's image tower: raw (unnormalised)
128-d ``synth-clip`` image embeddings of 32×32 images, the space the world's priors and decoder work
in. Every :class:`DistanceResult` names the network (``feature_network``) and its weights
(``feature_fingerprint``); values are comparable only between results of the same network, never
with published Inception FIDs. Any CLIP with ``encode_image`` can be passed instead.

**Two implementations.** ``value`` is clean-fid's (``cleanfid.fid.fid_from_feats`` /
``frechet_distance`` / ``kernel_distance`` on our features); ``torchmetrics_value`` comes from
``FrechetInceptionDistance(feature=module, normalize=True, input_img_size=...)`` /
``KernelInceptionDistance(feature=module, ...)`` fed the images themselves (cached reference features
are passed through the same module unchanged). They agree to numerical precision on the same features.

**Reference statistics.** :func:`reference_stats` renders a fixed set of world scenes and caches their
features, mean and covariance under ``cache_root()/fid-reference/<key>.npz``, the key being a content
hash of the feature network's fingerprint and the render set (category, n, seed, split). Files are
written atomically, read with ``allow_pickle=False`` and checked (key, shapes, checksum); a damaged
file is reported, recomputed and replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np
import torch
from torch import nn

from evalkit.contracts import content_hash
from evalkit.paths import cache_root
from evalkit.scorers.clipscore import clip_device, clip_image_size, prepare_images

DEFAULT_EXTRACTOR = "synth-clip"
#: names that ask for Inception-style features, which need a download
INCEPTION_NAMES = frozenset(
    {"inception", "inception-v3", "inception_v3", "clean", "legacy_tensorflow", "legacy_pytorch", "clip_vit_b_32"}
)
INCEPTION_NOTE = (
    "not an Inception-v3 FID/KID: Inception weights are unavailable offline (clean-fid and "
    "torch-fidelity download them); values compare only within one feature network"
)
CACHE_FORMAT = 1
REFERENCE_DIR = "fid-reference"


# --------------------------------------------------------------------------- feature network


class FeatureExtractor(nn.Module):
    """Images ``(N, 3, H, W)`` in [0, 1] → raw CLIP image embeddings ``(N, D)`` float32.

    ``fingerprint`` identifies the weights (a hash of the state dict for a torch module); it keys the
    reference cache. Images of another size are resized to the CLIP's input size.
    """

    def __init__(
        self, clip: Any, name: str | None = None, image_size: int | None = None, fingerprint: str | None = None
    ) -> None:
        super().__init__()
        if not callable(getattr(clip, "encode_image", None)):
            raise TypeError(f"a feature network needs encode_image(images); {type(clip).__name__} has none")
        self.clip = clip
        self.name = name or str(getattr(clip, "embedding_space", type(clip).__name__))
        self.image_size = image_size if image_size is not None else clip_image_size(clip)
        dim = getattr(clip, "embedding_dim", None)
        if not isinstance(dim, int):
            probe = torch.zeros(2, 3, self.image_size or 32, self.image_size or 32)
            dim = int(self(probe).shape[-1])
        self.num_features = int(dim)
        self._fingerprint = fingerprint

    @property
    def description(self) -> str:
        """The feature network in words, e.g. ``synth-clip image tower (128-d raw embeddings)``."""
        return f"{self.name} image tower ({self.num_features}-d raw embeddings)"

    @property
    def fingerprint(self) -> str:
        """Hash of the network's class, input size, width and weights."""
        if self._fingerprint is None:
            from evalkit.fingerprints import held_weights_digest

            weights = held_weights_digest(self.clip) if isinstance(self.clip, nn.Module) else ""
            if not weights:
                raise ValueError(
                    f"cannot fingerprint the feature network {self.name!r} (not a torch module); "
                    "pass FeatureExtractor(clip, fingerprint=...)"
                )
            self._fingerprint = content_hash(
                {
                    "class": f"{type(self.clip).__module__}.{type(self.clip).__qualname__}",
                    "image_size": self.image_size,
                    "dim": self.num_features,
                    "weights": weights,
                }
            )
        return self._fingerprint

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = prepare_images(images, self.image_size, clip_device(self.clip))
        with torch.no_grad():
            return self.clip.encode_image(x).float()


class TorchmetricsFeatures(nn.Module):
    """The module handed to torchmetrics: images go through the extractor, ``(N, D)`` cached features
    pass unchanged; output float64."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        super().__init__()
        self.extractor = extractor
        self.num_features = extractor.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if x.ndim == 2 else self.extractor(x)
        return out.double()


@functools.lru_cache(maxsize=1)
def _world_extractor() -> FeatureExtractor:
    from evalkit.world.models.clip import load_world_clip

    return FeatureExtractor(load_world_clip(), "synth-clip")


Extractor = Union[str, FeatureExtractor, Any]


def get_extractor(extractor: Extractor = DEFAULT_EXTRACTOR) -> FeatureExtractor:
    """``"synth-clip"`` (the shipped world CLIP), a :class:`FeatureExtractor`, or any CLIP with ``encode_image``."""
    if isinstance(extractor, FeatureExtractor):
        return extractor
    if isinstance(extractor, str):
        if extractor == DEFAULT_EXTRACTOR:
            return _world_extractor()
        if extractor.lower() in INCEPTION_NAMES:
            raise ValueError(
                f"feature network {extractor!r} is unavailable offline: clean-fid and torch-fidelity "
                f"download Inception/CLIP weights on first use. Use {DEFAULT_EXTRACTOR!r} "
                "(the world CLIP's image tower) or pass a CLIP with encode_image."
            )
        raise ValueError(
            f"unknown feature network {extractor!r}; expected {DEFAULT_EXTRACTOR!r}, "
            "a FeatureExtractor or a CLIP with encode_image"
        )
    return FeatureExtractor(extractor)


# --------------------------------------------------------------------------- images and features


def as_images(images: Any) -> torch.Tensor:
    """Images as ``(N, 3, H, W)`` float in [0, 1]: torch float/uint8 ``(N, 3, H, W)`` or numpy uint8
    ``(N, H, W, 3)`` (what :func:`evalkit.world.render` returns)."""
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3:
            from evalkit.world.models.tensors import images_to_tensor

            return images_to_tensor(images)
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected images as a torch tensor or numpy array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    x = images.float()
    if x.numel():
        if not torch.isfinite(x).all():
            raise ValueError("images contain NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"float images must lie in [0, 1]; got values in [{lo:.3g}, {hi:.3g}] (pass uint8 for 0–255 images)"
            )
    return x


def _chunks(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def image_features(images: Any, extractor: Extractor = DEFAULT_EXTRACTOR, batch_size: int = 256) -> np.ndarray:
    """``(N, D)`` float64 features of ``images`` (see :func:`as_images`) from the feature network."""
    ext = get_extractor(extractor)
    x = as_images(images)
    if not len(x):
        return np.zeros((0, ext.num_features))
    return torch.cat([ext(chunk).cpu() for chunk in _chunks(x, batch_size)]).double().numpy()


# --------------------------------------------------------------------------- reference statistics


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """Features, mean and covariance of a fixed set of world renders in one feature network."""

    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D, D), np.cov (ddof 1)
    features: np.ndarray  # (n, D) float64
    renders: dict  # {"category", "n", "seed", "split"}
    feature_network: str
    feature_fingerprint: str
    path: Path | None = None
    from_cache: bool = False

    @property
    def n(self) -> int:
        return int(self.features.shape[0])


def _stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def reference_path(key: str) -> Path:
    return cache_root() / REFERENCE_DIR / f"{key}.npz"


def reference_key(extractor: FeatureExtractor, renders: dict) -> str:
    """Content hash of (feature network fingerprint, render set description)."""
    return content_hash(
        {"kind": "fid-reference", "format": CACHE_FORMAT, "extractor": extractor.fingerprint, "renders": renders},
        length=32,
    )


def _load_reference(path: Path, key: str, ext: FeatureExtractor, renders: dict) -> ReferenceStats:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in ("key", "mu", "sigma", "features", "digest")}
    if str(arrays["key"]) != key:
        raise ValueError(f"stored key {arrays['key']} differs from {key}")
    features, mu, sigma = arrays["features"], arrays["mu"], arrays["sigma"]
    n, d = renders["n"], ext.num_features
    if features.shape != (n, d) or mu.shape != (d,) or sigma.shape != (d, d):
        raise ValueError(f"shapes {features.shape}, {mu.shape}, {sigma.shape} do not fit n={n}, D={d}")
    if str(arrays["digest"]) != _digest(features, mu, sigma):
        raise ValueError("checksum mismatch")
    return ReferenceStats(
        mu, sigma, features.astype(np.float64), dict(renders), ext.description, ext.fingerprint, path, True
    )


def _write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def reference_stats(
    category: str = "all",
    n: int = 2000,
    seed: int = 0,
    split: str = "val",
    extractor: Extractor = DEFAULT_EXTRACTOR,
    batch_size: int = 256,
) -> ReferenceStats:
    """Statistics of ``n`` world renders (``sample_pairs(category, n, seed, split)``), cached on disk.

    The first call renders, extracts and writes ``cache_root()/fid-reference/<key>.npz``; later calls
    with the same feature network and render set read it. A damaged file is recomputed (with a warning).
    """
    if int(n) < 2:
        raise ValueError(f"reference statistics need at least 2 renders, got n={n}")
    ext = get_extractor(extractor)
    renders = {"category": category, "n": int(n), "seed": int(seed), "split": split}
    key = reference_key(ext, renders)
    path = reference_path(key)
    if path.exists():
        try:
            return _load_reference(path, key, ext, renders)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            warnings.warn(
                f"FID reference cache {path} is unreadable or damaged ({type(error).__name__}: {error}); recomputing it"
            )
    from evalkit.world import render, sample_pairs

    _, scenes = sample_pairs(category, int(n), int(seed), split=split)
    features32 = torch.cat([ext(chunk).cpu() for chunk in _chunks(as_images(render(scenes)), batch_size)]).numpy()
    features = features32.astype(np.float64)
    mu, sigma = _stats(features)
    try:
        _write_atomic(
            path,
            {
                "key": np.array(key),
                "mu": mu,
                "sigma": sigma,
                "features": features32,
                "digest": np.array(_digest(features32, mu, sigma)),
                "feature_network": np.array(ext.description),
                "renders": np.array(json.dumps(renders)),
            },
        )
    except OSError as error:
        warnings.warn(f"could not write the FID reference cache {path} ({error}); continuing without it")
        path = None
    return ReferenceStats(mu, sigma, features, renders, ext.description, ext.fingerprint, path, False)


# --------------------------------------------------------------------------- distances


@dataclass(frozen=True)
class DistanceResult:
    """One FID or KID value, from clean-fid (``value``) and torchmetrics, with its feature network named."""

    metric: str  # "fid" | "kid"
    value: float  # clean-fid's value: the one to report
    torchmetrics_value: float
    feature_network: str  # e.g. "synth-clip image tower (128-d raw embeddings)"
    feature_fingerprint: str
    n_real: int
    n_fake: int
    kid_std: float | None = None  # KID: torchmetrics' standard deviation over subsets
    note: str = INCEPTION_NOTE

    @property
    def cleanfid_value(self) -> float:
        return self.value

    @property
    def relative_difference(self) -> float:
        """``|clean-fid − torchmetrics| / max(|clean-fid|, |torchmetrics|)`` (meaningless near 0)."""
        scale = max(abs(self.value), abs(self.torchmetrics_value), 1e-300)
        return abs(self.value - self.torchmetrics_value) / scale

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.metric.upper()} {self.value:.4g} (clean-fid; torchmetrics {self.torchmetrics_value:.4g}) "
            f"in {self.feature_network}, {self.n_real} real vs {self.n_fake} fake images"
        )


@dataclass
class _Side:
    features: np.ndarray  # (n, D) float64
    feed: torch.Tensor  # what torchmetrics is fed: images, or cached features (n, D)
    stats: tuple[np.ndarray, np.ndarray] | None  # cached (mu, sigma), when a reference


def _side(data: Any, ext: FeatureExtractor, batch_size: int, which: str, metric: str) -> _Side:
    if isinstance(data, ReferenceStats):
        if data.feature_fingerprint != ext.fingerprint:
            raise ValueError(
                f"the {which} reference statistics were computed with {data.feature_network} "
                f"(fingerprint {data.feature_fingerprint}), not with {ext.description} "
                f"(fingerprint {ext.fingerprint}): pass the same extractor"
            )
        side = _Side(data.features, torch.from_numpy(data.features), (data.mu, data.sigma))
    else:
        images = as_images(data)
        side = _Side(image_features(images, ext, batch_size), images, None)
    if len(side.features) < 2:
        raise ValueError(f"{metric} needs at least 2 images in each set; the {which} set has {len(side.features)}")
    return side


def fid(real: Any, fake: Any, extractor: Extractor = DEFAULT_EXTRACTOR, batch_size: int = 256) -> DistanceResult:
    """Fréchet distance between the feature distributions of ``real`` and ``fake``.

    Each side is images (see :func:`as_images`) or :class:`ReferenceStats` of the same feature network.
    Fewer than 2 images on a side raises ValueError; fewer images than feature dimensions gives a
    rank-deficient covariance (a warning) and an unreliable value.
    """
    from cleanfid.fid import fid_from_feats, frechet_distance
    from torchmetrics.image.fid import FrechetInceptionDistance

    ext = get_extractor(extractor)
    r, f = _side(real, ext, batch_size, "real", "FID"), _side(fake, ext, batch_size, "fake", "FID")
    for which, side in (("real", r), ("fake", f)):
        if len(side.features) <= ext.num_features:
            warnings.warn(
                f"FID with {len(side.features)} {which} images in {ext.num_features}-d features: the "
                "covariance is rank-deficient; use more images than feature dimensions"
            )
    if r.stats is None and f.stats is None:
        value = fid_from_feats(r.features, f.features)
    else:
        (mu1, s1), (mu2, s2) = r.stats or _stats(r.features), f.stats or _stats(f.features)
        value = frechet_distance(mu1, s1, mu2, s2)

    size = ext.image_size or int(r.feed.shape[-1] if r.feed.ndim == 4 else f.feed.shape[-1])
    metric = FrechetInceptionDistance(feature=TorchmetricsFeatures(ext), normalize=True, input_img_size=(3, size, size))
    for side, is_real in ((r, True), (f, False)):
        for chunk in _chunks(side.feed, batch_size):
            metric.update(chunk, real=is_real)
    tm_value = float(metric.compute())
    return DistanceResult(
        "fid", float(value), tm_value, ext.description, ext.fingerprint, len(r.features), len(f.features)
    )


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """clean-fid's KID draws subsets from numpy's global RNG: seed it here and restore it after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def kid(
    real: Any,
    fake: Any,
    extractor: Extractor = DEFAULT_EXTRACTOR,
    batch_size: int = 256,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> DistanceResult:
    """Kernel distance (unbiased MMD², cubic polynomial kernel) between ``real`` and ``fake`` features.

    Averaged over ``subsets`` random subsets of ``min(n_real, n_fake, subset_size)`` samples per side,
    drawn with ``seed`` (both implementations; the global RNGs are left as they were). With equal set
    sizes ≤ ``subset_size`` every subset is the whole set and the two implementations coincide.
    """
    from cleanfid.fid import kernel_distance
    from torchmetrics.image.kid import KernelInceptionDistance

    ext = get_extractor(extractor)
    r, f = _side(real, ext, batch_size, "real", "KID"), _side(fake, ext, batch_size, "fake", "KID")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"KID needs subsets ≥ 1 and subset_size ≥ 2, got {subsets} and {subset_size}")
    m = min(len(r.features), len(f.features), subset_size)
    with _numpy_seed(seed):
        value = kernel_distance(r.features, f.features, num_subsets=subsets, max_subset_size=subset_size)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        metric = KernelInceptionDistance(
            feature=TorchmetricsFeatures(ext), subsets=subsets, subset_size=m, normalize=True
        )
    for side, is_real in ((r, True), (f, False)):
        for chunk in _chunks(side.feed, batch_size):
            metric.update(chunk, real=is_real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return DistanceResult(
        "kid",
        float(value),
        float(mean),
        ext.description,
        ext.fingerprint,
        len(r.features),
        len(f.features),
        kid_std=float(std),
    )


def run_distances(
    run_dir: str | os.PathLike, n_reference: int = 2000, extractor: Extractor = DEFAULT_EXTRACTOR
) -> list[dict]:
    """FID and KID of each (prior, suite) image set of a finished run against renders of the suite's category.

    Only synthetic suites have a reference (their world renders, val split). One row per set, with both
    implementations' values and the feature network named.
    """
    from PIL import Image

    from evalkit.harness.runs import load_run

    run = load_run(run_dir)
    sets: dict[tuple[str, str, str], list[str]] = {}
    seen = set()
    for s in run.samples:
        key = (s["prior"], s["suite"], s["category"])
        if s.get("image_path") and (key, s["image_path"]) not in seen:
            seen.add((key, s["image_path"]))
            sets.setdefault(key, []).append(s["image_path"])
    rows = []
    for (prior, suite, category), paths in sorted(sets.items()):
        if not suite.startswith("synth-"):
            continue
        images = np.stack([np.asarray(Image.open(Path(run.path) / p).convert("RGB")) for p in paths])
        reference = reference_stats(category, n_reference, split="val", extractor=extractor)
        distance = fid(reference, images, extractor)
        kernel = kid(reference, images, extractor)
        rows.append(
            {
                "prior": prior,
                "suite": suite,
                "images": len(paths),
                "fid": round(distance.value, 3),
                "fid_torchmetrics": round(distance.torchmetrics_value, 3),
                "kid": round(kernel.value, 4),
                "kid_torchmetrics": round(kernel.torchmetrics_value, 4),
                "feature_network": distance.feature_network,
                "reference": f"{n_reference} val renders of {category}",
            }
        )
    return rows
