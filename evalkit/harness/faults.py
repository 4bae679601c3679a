"""Injected faults: real regressions for testing the regression gate's power (``evalkit compare``).

Each fault changes resolved plugins *in place*, as a bug would — the protocol a run records (decoder
version, steps, scorer version) stays what it was, so the comparison with the golden is not refused
but has to find the damage in the scores. A faulty prior or scorer also records the fault as a setting
(``injected_fault``), so its work-cache keys differ from the intact plugin's and a cached run never
mixes the two; a faulty decoder cannot (its settings are part of the protocol): run those uncached.
Pass :func:`injector` to :func:`evalkit.harness.runner.run`:

    run(smoke_config(out), inject=injector(noise_prior("eclipse", 0.5)))

Used by ``tests/test_regression_gate.py`` and ``benchmarks/gate_power.py``; never by a real run.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Callable

import torch

Fault = Callable[[dict, object, dict], None]


def injector(*faults: Fault) -> Fault:
    """One ``inject`` callable applying ``faults`` in order."""

    def inject(priors: dict, decoder, scorers: dict) -> None:
        for fault in faults:
            fault(priors, decoder, scorers)

    return inject


def _mark(plugin, label: str) -> None:
    plugin.injected_fault = (
        (getattr(plugin, "injected_fault", "") + "; ") if getattr(plugin, "injected_fault", "") else ""
    ) + label


def _modules(plugin) -> list[torch.nn.Module]:
    return (
        [plugin]
        if isinstance(plugin, torch.nn.Module)
        else [v for v in vars(plugin).values() if isinstance(v, torch.nn.Module)]
    )


def noise_prior(name: str, sigma: float, seed: int = 0) -> Fault:
    """Prior ``name``'s weights plus Gaussian noise of ``sigma`` × each tensor's own standard deviation."""

    def fault(priors, decoder, scorers):
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in _modules(priors[name]):
                for tensor in module.state_dict(keep_vars=True).values():
                    if tensor.is_floating_point() and tensor.numel() > 1:
                        tensor.add_(sigma * tensor.std() * torch.randn(tensor.shape, generator=generator).to(tensor))
        _mark(priors[name], f"weights noised {sigma} sd, seed {seed}")

    return fault


def blend_prior(name: str, alpha: float, toward: str = "none") -> Fault:
    """Prior ``name``'s output moved ``alpha`` of the way to prior ``toward``'s (default: the mean image
    embedding, i.e. no prompt signal): a smooth ladder of degradations from 0 (intact) to 1."""

    def fault(priors, decoder, scorers):
        from evalkit.priors import load_prior

        prior, other = priors[name], priors.get(toward) or load_prior(toward)
        original = prior.predict

        def predict(batch):
            own = original(batch)
            return (1 - alpha) * own + alpha * other.predict(batch).to(own)

        prior.predict = predict
        _mark(prior, f"output blended {alpha} toward {toward}")

    return fault


def scale_prior(name: str, factor: float) -> Fault:
    """Prior ``name``'s output multiplied by ``factor`` (a raw-embedding norm bug)."""

    def fault(priors, decoder, scorers):
        original = priors[name].predict
        priors[name].predict = lambda batch: factor * original(batch)
        _mark(priors[name], f"output scaled by {factor}")

    return fault


def fewer_steps(steps: int) -> Fault:
    """The decoder samples with ``steps`` steps whatever the protocol (which still records its own) says."""

    def fault(priors, decoder, scorers):
        original = decoder.decode
        decoder.decode = lambda embeds, batch, protocol: original(
            embeds, batch, replace(protocol, num_inference_steps=steps)
        )

    return fault


def bias_scorer(name: str, bias: float) -> Fault:
    """Scorer ``name``'s per-image scores lowered by ``bias`` (kept in [0, 1])."""

    def fault(priors, decoder, scorers):
        scorer = scorers[name]
        original = scorer.score

        @functools.wraps(original)
        def score(images, batch):
            rows = original(images, batch)
            for row in rows:
                row["score"] = min(max(float(row["score"]) - bias, 0.0), 1.0)
            return rows

        scorer.score = score
        _mark(scorer, f"scores lowered by {bias}")

    return fault
