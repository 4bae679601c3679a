"""Distribution metrics over image sets.

- :mod:`evalkit.metrics.fid`: FID and KID in a named feature space (default: the world CLIP's
  image tower), each computed with clean-fid and with torchmetrics, plus cached reference
  statistics of world renders. Use ``from evalkit.metrics.fid import fid, kid, reference_stats``.

Per-image text alignment (CLIPScore) is a scorer: :mod:`evalkit.scorers.clipscore`.
Importing this package imports nothing heavy.
"""
