"""llm-evaluate: reads ``input-alias`` (default ``staged``) and writes ``output-alias``
(default ``evaluated``), only when the correct-rate, correct-rate-vs-champion, refusal-rate
and gain-over-base gates pass.

One container step running ``mlcp llm evaluate``: the eval split through vLLM's staged slot,
the champion's live slot and the bare base, every answer graded by the judge (``reference``
or an OpenAI-compatible endpoint), whose instructions are a versioned prompt.
"""

from __future__ import annotations

from steps.llm import evaluate

from .common import stage_template

SPEC, template = stage_template(
    __name__, evaluate.STAGE, ("250m", "512Mi", "1", "2Gi"), deadline=1800
)
