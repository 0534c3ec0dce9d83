"""cv-evaluate: reads ``input-alias`` (default ``staged``) and writes ``output-alias``
(default ``evaluated``), only when the accuracy gate passes.

One container step running ``mlcp cv evaluate``: the test split through Triton's staged slot,
accuracy against a minimum and against the live version's recorded decision.
"""

from __future__ import annotations

from steps.cv import evaluate

from .common import stage_template

SPEC, template = stage_template(__name__, evaluate.STAGE, ("250m", "1Gi", "1", "2Gi"), deadline=900)
