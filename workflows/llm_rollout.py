"""llm-rollout: reads ``benchmarked`` (the challenger) and ``live`` (the champion) and writes
``live`` (and ``previous``) when every step of live traffic passed.

The LLM twin of cv-rollout (see there): ``mlcp llm rollout`` (steps/stages/rollout.py) moves the
share of the model's OpenAI-API traffic that the router sends to the challenger's adapter
slot; ``approval=true`` suspends before each step after the first (``argo resume``).
"""

from __future__ import annotations

from steps.llm.pipeline import LLM

from .common import rollout_template

SPEC, template = rollout_template(__name__, LLM.rollout)
