"""A compact tokenizer derived from open_clip's offline BPE vocabulary.

open_clip's ``SimpleTokenizer`` (its BPE file ships inside the wheel) splits text into BPE ids of a
49,408-entry vocabulary. The world needs a few dozen of them, so the text tower's embedding table
keeps only the BPE ids that occur in the world's words: compact id 0 is padding, 1 is
start-of-text, then the kept BPE ids, then ``unk``, and end-of-text last (the highest id, so
open_clip's ``argmax`` pooling finds it). A word outside the vocabulary still tokenizes: its BPE
pieces map to ``unk`` and a warning names the word.
"""

from __future__ import annotations

import functools
import warnings

import torch


@functools.lru_cache(maxsize=1)
def bpe_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


class CompactTokenizer:
    PAD, SOT = 0, 1

    def __init__(self, bpe_ids: list[int], context_length: int):
        self.bpe_ids = list(bpe_ids)
        self.context_length = context_length
        self._compact = {bpe: i + 2 for i, bpe in enumerate(self.bpe_ids)}
        self.UNK = len(self.bpe_ids) + 2
        self.EOT = len(self.bpe_ids) + 3
        self._warned: set[str] = set()

    @property
    def vocab_size(self) -> int:
        return self.EOT + 1

    @classmethod
    def from_words(cls, words: list[str], context_length: int) -> "CompactTokenizer":
        bpe = bpe_tokenizer()
        ids = sorted({i for word in words for i in bpe.encode(word)})
        return cls(ids, context_length)

    def unknown_words(self, prompt: str) -> list[str]:
        """The words of ``prompt`` with a piece outside the vocabulary (each is encoded as ``unk``)."""
        bpe = bpe_tokenizer()
        return [word for word in prompt.split() if any(i not in self._compact for i in bpe.encode(word))]

    def encode_words(self, prompt: str) -> list[int]:
        bpe = bpe_tokenizer()
        out = []
        for word in prompt.split():
            pieces = [self._compact.get(i, self.UNK) for i in bpe.encode(word)]
            if self.UNK in pieces and word.lower() not in self._warned:
                self._warned.add(word.lower())
                warnings.warn(
                    f"{word!r} is outside the synthetic world's vocabulary; it is encoded as <unk>", stacklevel=3
                )
            out.extend(pieces)
        return out

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)``: ids ``(N, context_length)`` long, mask bool (True = real token)."""
        ids = torch.full((len(prompts), self.context_length), self.PAD, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens = [self.SOT] + self.encode_words(prompt)[: self.context_length - 2] + [self.EOT]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, ids != self.PAD
