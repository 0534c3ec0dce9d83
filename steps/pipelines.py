"""The table of pipelines: each (pipeline, stage) of ``mlcp`` and of the templates is looked
up here. Every module listed is a light declaration (no heavy import at module level).

Adding a pipeline is one line here and its ``steps/<name>/pipeline.py``.
"""

from __future__ import annotations

from .cv.pipeline import CV
from .declare import Pipeline
from .llm.pipeline import LLM

PIPELINES: tuple[Pipeline, ...] = (CV, LLM)
