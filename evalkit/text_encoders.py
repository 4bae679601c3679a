"""Text encoders per embedding space: what a prior that declares ``text_encoders = (space,)`` reads.

A run text-encodes every prompt once per space and hands the encodings to every prior in ``batch.text``
(:class:`evalkit.runner.TextCache`). The encoder of a space comes from, in order: the decoder (its ``clip``),
a prior of the run that holds one (``clip`` / ``text_encoder()``), else the space's own loader below — so a
prior of your own needs to declare only the space it reads (docs/add-a-prior.md).
"""

from __future__ import annotations

import os

from evalkit.errors import EvalkitError, WeightsNotFoundError

#: space → (environment variable of a folder holding ``text_encoder/`` + ``tokenizer/``, what to download)
FOLDER_SPACES = {
    "clip-vit-l-14": ("EVALKIT_KARLO_DIR", "kakaobrain/karlo-v1-alpha"),
    "clip-vit-bigg-14": ("EVALKIT_KANDINSKY22_PRIOR_DIR", "kandinsky-community/kandinsky-2-2-prior"),
}


def load_text_encoder(space: str):
    """The text encoder of ``space`` without any plugin to hold it: the world CLIP for ``synth-clip`` (shipped),
    the CLIP text tower of a local public folder for the real spaces."""
    if space == "synth-clip":
        from evalkit.embedded.clip import load_world_clip

        return load_world_clip()
    if space in FOLDER_SPACES:
        variable, repo = FOLDER_SPACES[space]
        folder = os.environ.get(variable, "").strip()
        if not folder:
            raise WeightsNotFoundError(f"a prior reads text encodings of {space!r}, whose text encoder is the one of "
                                       f"{repo} (text_encoder/ + tokenizer/): download it and set {variable}=DIR")
        from evalkit.priors.real import HFTextEncoder

        return HFTextEncoder.from_pretrained(folder, space)
    known = ", ".join(["synth-clip", *FOLDER_SPACES])
    raise EvalkitError(f"no text encoder is known for embedding space {space!r} (known: {known}); a prior of "
                       "another space provides its own (a `text_encoder()` method returning an object with "
                       "`encode_text(prompts)`)")


def text_encoders(priors: dict, decoder) -> dict:
    """One text encoder per embedding space the priors read (shared by all priors of the run)."""
    encoders = {}
    clip = getattr(decoder, "clip", None) or next((getattr(p, "clip", None) for p in priors.values()
                                                   if getattr(p, "clip", None)), None)
    if clip is not None:
        encoders[clip.embedding_space] = clip
    for prior in priors.values():
        for space in prior.text_encoders:
            if space not in encoders and callable(getattr(prior, "text_encoder", None)):
                encoders[space] = prior.text_encoder()
    for prior in priors.values():
        for space in prior.text_encoders:
            if space not in encoders:
                encoders[space] = load_text_encoder(space)
    return encoders
