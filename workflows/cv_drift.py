"""cv-drift: reads ``live`` (the data its version was trained on) and writes
``drift-detected`` (at the live version) when the newest image set drifted.

One container step running ``mlcp cv drift`` (steps/cv/drift.py, steps/stages/drift.py): no new
data, new data without drift, or drift; it records the decision and writes the outputs
``retrain`` (true|false), ``reason`` and ``data``, which cv-retrain's ``when`` reads. Exit 0
in all three cases, 2 on bad input (unknown model, no live version, unreadable data).
"""

from __future__ import annotations

from steps.cv.pipeline import CV

from .common import stage_template
from .specs import DRIFT_OUTPUTS

SPEC, template = stage_template(
    __name__, CV.drift, ("250m", "1Gi", "1", "2Gi"), deadline=900, outputs=DRIFT_OUTPUTS
)
