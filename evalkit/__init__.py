"""evalkit: a benchmark and evaluation harness for text-to-image priors.

Importing the package is cheap: no torch, no diffusers. Heavy modules are imported
where they are used, so ``evalkit --help`` and ``evalkit ls`` stay fast.
"""

__version__ = "0.1.0"
