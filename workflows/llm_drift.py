"""llm-drift: reads ``live`` (the instructions its adapter was trained on) and writes
``drift-detected`` (at the live version) when the newest instruction set drifted.

One container step running ``mlcp llm drift`` (steps/llm/drift.py, steps/stages/drift.py), the LLM
twin of cv-drift (see there): task mix and prompt length instead of labels and intensity.
"""

from __future__ import annotations

from steps.llm.pipeline import LLM

from .common import stage_template
from .specs import DRIFT_OUTPUTS

SPEC, template = stage_template(
    __name__, LLM.drift, ("250m", "512Mi", "1", "1Gi"), deadline=900, outputs=DRIFT_OUTPUTS
)
