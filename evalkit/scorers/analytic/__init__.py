"""The analytic scorer: HRS-style object detection and attribute reading for the synthetic world.

No learned model. For each image:

1. **Segment.** The world's background is grey (R = G = B) plus mild noise and every object colour,
   main or pattern, is saturated, so a pixel is foreground when its *chroma* (its distance from the
   grey axis) is high: above :data:`FG_CHROMA` = 24 (0–255 scale), or above 3.5 × the image's
   estimated chroma noise when that is higher. A colour cast of the background (the mean chroma of
   the least saturated 30 % of pixels) is removed first. Connected components (8-neighbour, labelled
   in numpy by min-label propagation with pointer jumping) are the objects; components smaller than
   ``min_area`` pixels are noise. A component too long for one object (≥ 18 px: blur can bridge the
   1-px gap the layout keeps between neighbours) is cut along its weakest row or column; any two
   objects' boxes are separated by a full background row or column, so a straight cut exists.
2. **Colour.** The summed chroma vector of a component is its hue — the same for the darker pattern
   colour and under anti-aliased blending with the grey background — and the nearest world colour
   by angle is the call.
3. **Shape, size and texture** by analysis-by-synthesis against the renderer's own sprites. A
   pixel's chroma projected on the component colour's chroma is ``e = main + 0.45 · pattern``
   coverage, exactly what :func:`evalkit.world.renderer.sprite` draws, whatever the background
   level. The ``e`` map in a 24 × 24 window centred on the component's centroid is compared by
   least squares (one matrix product for all objects of a batch) with every sprite of the world —
   6 shapes × 4 textures × 6 pixel sizes — under nuisance parameters that decoder outputs need:
   5 blur levels, 3 × 3 placements and a fitted amplitude (gain 0.6–1.5). The best fit gives shape,
   texture and size px (hence size class). Each attribute's *margin* (SSD of the best hypothesis
   with another value of that attribute minus the best SSD, in squared-coverage pixels; for colour,
   the hue-angle gap in degrees between the two nearest colours) says how clear the call was.
4. **Phrases.** Each noun phrase is read with the world grammar's vocabulary; it is satisfied
   (p = 1) when some detected object has every attribute the phrase names, else p = 0 (a phrase with
   a word outside the world's vocabulary cannot be verified: p = 0, the word is reported).
   ``score`` = fraction of satisfied phrases (HRS accuracy); ``product`` = their product.
5. **Relations.** A spatial prompt of the world ("a circle on the left of a square") is scored by
   T2I-CompBench's 2-D spatial rules (:mod:`evalkit.scorers.spatial_rules`, the code ``t2i-spatial``
   runs on OWLv2 boxes) on the foreground boxes of the objects its two phrases found (each phrase
   its own object), in UniDet's 479-px frame, with confidence 1: ``score`` = 0.5 + position / 2
   when both are found (1 when the relation holds, 0.5 when it does not), else 0.

Rows keep every question with its p and the object that satisfied it, plus the detected objects
(attributes, boxes, margins, fit residual), so a low score can be read off the row. Images of any
size are resampled to the world's 32 × 32 first.
``python -m evalkit.bootstrap python benchmarks/scorers/analytic_validation.py`` measures the scorer's
accuracy on ground-truth renders, optionally degraded (:func:`degrade`).

Modules, one per stage: :mod:`.segmentation` (step 1), :mod:`.reading` (the colour and the ``e``
windows), :mod:`.templates` (the sprite bank, blurred by :mod:`.blur`, and the fit),
:mod:`.detection` (the stages in order), :mod:`.scorer` (step 4); the phrase grammar is
:mod:`evalkit.world.phrases`, shared with the other scorers of the world.
"""

from evalkit.scorers.analytic.blur import degrade
from evalkit.scorers.analytic.detection import Detections, detect
from evalkit.scorers.analytic.scorer import AnalyticScorer, score_phrases, score_relation
from evalkit.scorers.analytic.segmentation import FG_CHROMA, MAX_OBJECTS, MIN_AREA, NOISE_FACTOR
from evalkit.world.phrases import noun_phrases, parse_phrase, unreadable  # importers from before the move

__all__ = [
    "AnalyticScorer",
    "Detections",
    "detect",
    "degrade",
    "score_phrases",
    "score_relation",
    "FG_CHROMA",
    "MAX_OBJECTS",
    "MIN_AREA",
    "NOISE_FACTOR",
    "noun_phrases",
    "parse_phrase",
    "unreadable",
]
