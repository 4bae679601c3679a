"""Errors evalkit raises for bad input. The CLI prints their message and exits with code 2."""

from __future__ import annotations


class EvalkitError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""

    exit_code = 2


class UnknownNameError(EvalkitError, KeyError):
    """A plugin or suite name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]):
        import difflib

        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(known) if known else "(none registered)"
        super().__init__(f"unknown {kind} {name!r}.{hint} Known {kind}s: {listing}.")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class WeightsNotFoundError(EvalkitError, FileNotFoundError):
    """A weight directory or file that is not where it is expected."""


class EmbeddingContractError(EvalkitError, ValueError):
    """A prior's embeddings do not fit a decoder (dimension, space or normalisation)."""


class PromptFileError(EvalkitError, ValueError):
    """A prompt file that is missing, empty, unreadable or not the expected version."""


class ConfigMismatchError(EvalkitError, ValueError):
    """A checkpoint whose config or tensors do not match the requested architecture."""


class CorruptFileError(EvalkitError, ValueError):
    """A file evalkit wrote or reads that is truncated, damaged or edited by hand (named in the message)."""


class WriteError(EvalkitError, OSError):
    """A file could not be written (full disk, no permission); nothing partial is left behind."""


class SettingError(EvalkitError, ValueError):
    """An option or setting whose value cannot work (the message names it and what would)."""


class RunExistsError(EvalkitError, FileExistsError):
    """An output folder that already holds a run: pass --resume to continue it, or pick another folder."""
