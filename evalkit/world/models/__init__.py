"""The world's models that are not plugins: its CLIP (a small open_clip model with a compact tokenizer), and
renders as torch tensors (:mod:`.tensors`).

The shipped weights of the world's CLIP, decoder and binding scorer live in ``evalkit/world/weights/``
(:data:`evalkit.paths.WORLD_WEIGHTS`). Unlike :mod:`evalkit.world`, these modules import torch.
"""
