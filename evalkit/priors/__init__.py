"""Priors: map prompts to image embeddings. ``load_prior(name)`` resolves a registered name."""

from __future__ import annotations

import inspect

from evalkit.registry import PRIORS

#: sampling options only diffusion priors take (CLI: --prior-num-inference-steps, --prior-guidance-scale)
DIFFUSION_OPTIONS = ("num_inference_steps", "guidance_scale", "rerank")
#: what callers hand every prior and a prior takes only if it reads it (the world CLIP text encoder)
SHARED_OPTIONS = ("clip",)


def prior_parameters(name: str) -> set[str]:
    """The keyword options the prior registered as ``name`` takes (its constructor's parameters)."""
    return set(inspect.signature(PRIORS.get(name)).parameters)


def _given(value) -> bool:
    """Whether an option was set by the user: None (and False for a flag) is the silent default."""
    return value is not None and value is not False


def load_prior(name: str, random_init: str | None = None, among=None, **options):
    """Build the prior registered as ``name`` with the ``options`` its constructor takes.

    An option given a value (not None, not False) that the prior does not take is an :class:`EvalkitError`
    naming the prior and the options (e.g. guidance for a prior with no sampling loop), unless another prior
    of the same run takes it: ``among`` names the run's priors, and a shared option reaches those of them
    that take it (``--prior-guidance-scale 2`` with ``eclipse,diffusion``: the diffusion prior's guidance).
    Options left at None, and the :data:`SHARED_OPTIONS`, are dropped silently where not taken.

    ``random_init="real"`` / ``"tiny"``: the prior's ``random_init(size=...)`` instead (its public
    architecture and text encoder with random weights, no files; for speed and memory measurements).
    """
    from evalkit.errors import EvalkitError

    cls = PRIORS.get(name)
    accepted = inspect.signature(cls).parameters
    if random_init is not None and options.get("path") is not None:
        raise EvalkitError(
            f"--random-init builds prior {name!r} with random weights; it cannot be combined "
            "with --prior-path (drop one of them)"
        )
    if options.get("path") is not None and "path" not in accepted:
        raise EvalkitError(f"prior {name!r} loads no weights folder; --prior-path applies to trained priors only")
    refused = [k for k, v in options.items() if k not in accepted and k not in SHARED_OPTIONS and _given(v)]
    others = [n for n in dict.fromkeys(among or ()) if n != name]
    alone = [k for k in refused if not any(k in prior_parameters(n) for n in others)]
    if alone:
        diffusion = set(alone) <= set(DIFFUSION_OPTIONS)
        if others:
            why = " (none of them is a diffusion prior)" if diffusion else ""
            raise EvalkitError(
                f"none of the priors {', '.join(repr(n) for n in [name, *others])} takes {' / '.join(alone)}{why}"
            )
        why = " (it is not a diffusion prior)" if diffusion else ""
        raise EvalkitError(f"prior {name!r} takes no {' / '.join(alone)}{why}")
    if random_init is not None:
        builder = PRIORS.random_builder(name, random_init)
        loading = {"path", "allow_pickle", "text_encoder_path", "embedding_space"}  # folder options: not used
        settings = {k: v for k, v in options.items() if k in accepted and k not in loading and v is not None}
        return builder(size=random_init, **settings)
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})
