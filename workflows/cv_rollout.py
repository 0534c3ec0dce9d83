"""cv-rollout: reads ``benchmarked`` (the challenger) and ``live`` (the champion) and writes
``live`` (and ``previous``) when every step of live traffic passed.

A container running ``mlcp cv rollout`` (steps/stages/rollout.py): the challenger's share of
the model's traffic at the router moves through the steps (5, 25, 50, 100 by default), each
step judged on its own live traffic against the champion's; all pass: the promote path moves
``live``; one fails: the weight goes back to 0 and the step exits 3. It holds the promote
template's mutex for the model while it runs. With ``approval=true`` it runs one step at a
time (``--until next``, the weight held), with an Argo ``suspend`` between the steps::

    argo submit --from workflowtemplate/cv-rollout -p model-name=M -p approval=true
    argo resume <workflow>     # after each step: go on to the next
"""

from __future__ import annotations

from steps.cv.pipeline import CV

from .common import rollout_template

SPEC, template = rollout_template(__name__, CV.rollout)
