"""Suites: versioned prompt sets. ``load_suite(name)`` resolves a registered name."""

from __future__ import annotations

import inspect

from evalkit.registry import SUITES


def load_suite(name: str, **options):
    """Build the suite registered as ``name``; options it does not take (e.g. ``prompts_dir``) are ignored."""
    factory = SUITES.get(name)
    accepted = inspect.signature(factory).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    return factory(**kwargs)
