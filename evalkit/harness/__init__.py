"""The evaluation harness: what turns plugins into results.

``runner`` (the run as named stages: encode → prior → decode → score → rows), ``run_config`` (its flags),
``presets``, ``cache`` (the content-addressed work cache) and ``cache_admin``, ``runs`` (run folders and
reading them back), ``paired`` (paired per-image comparisons), ``compare`` (regression reports), ``export`` /
``importer`` (T2I-CompBench's folder format out and in) and ``faults`` (injected regressions for the gate's tests).
"""
