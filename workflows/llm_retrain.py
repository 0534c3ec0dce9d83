"""llm-retrain: reads ``live`` (the instructions its adapter was trained on) and writes
``drift-detected``, then ``live`` (and ``previous``) when it retrains.

The LLM twin of cv-retrain (see there): ``llm-drift`` first, then the LLM chain only when it
says ``retrain=true`` or ``force-retrain=true``; its own build settings
``MLCP_LLM_RETRAIN_*``, an hour later by default, so the two do not compete.
"""

from __future__ import annotations

from .common import retrain_template
from .llm_drift import SPEC as DRIFT
from .llm_pipeline import SPEC as PIPELINE

template = retrain_template(
    __name__, PIPELINE, DRIFT, "llm", "LLM: retraining on drift or new data (llm-drift, LLM chain)"
)
