"""``projection``: the ECLIPSE network trained with the projection loss alone (λ = 0).

Same architecture and inference as :mod:`evalkit.priors.eclipse` (one forward pass); the regression-only
baseline of the ECLIPSE paper. Trained by ``evalkit train-baseline --prior projection``.
"""

from __future__ import annotations

from evalkit.priors.eclipse import EclipsePrior


class ProjectionPrior(EclipsePrior):
    name = "projection"
    kind = "projection"
