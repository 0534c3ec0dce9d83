"""cv-evaluate: reads ``input-alias`` (default ``staged``) and writes ``output-alias``
(default ``evaluated``), only when the accuracy and accuracy-vs-champion gates pass.

One container step running ``mlcp cv evaluate``: the test split through Triton's staged slot
and the champion's live slot side by side, accuracy against a minimum and, paired, against
the champion's on the same images.
"""

from __future__ import annotations

from steps.cv import evaluate

from .common import stage_template

SPEC, template = stage_template(__name__, evaluate.STAGE, ("250m", "1Gi", "1", "2Gi"), deadline=900)
