"""cv-retrain: reads ``live`` (the data its version was trained on) and writes
``drift-detected``, then ``live`` (and ``previous``) when it retrains: a CronWorkflow that
trains on reason, not on the calendar alone.

Each run: the ``cv-drift`` step (``templateRef``) compares the newest published image set
(parameter ``data``, default ``newest``) with the live version's; then the CV chain
(cv-train on the data it found -> cv-deploy -> cv-evaluate -> cv-perf-test -> promote, each
by ``templateRef``; or, with ``promotion=rollout``, cv-rollout instead of promote) runs only
when it said ``retrain=true`` (drift, or new data and ``retrain-on-new-data=true``), or when
``force-retrain=true`` (an Argo ``when``). Promoting a new live version removes
``drift-detected``.

Schedule, time zone, model and whether it is installed suspended are build settings
(workflows/settings.py: ``MLCP_CV_RETRAIN_SCHEDULE``, ``MLCP_RETRAIN_TIMEZONE``,
``MLCP_CV_RETRAIN_MODEL``, ``MLCP_CV_RETRAIN_SUSPEND``). ``concurrencyPolicy: Forbid``: a
run still going when the next is due makes that one skip. Switch it on with
``argo cron resume cv-retrain``.
"""

from __future__ import annotations

from .common import retrain_template
from .cv_drift import SPEC as DRIFT
from .cv_pipeline import SPEC as PIPELINE

template = retrain_template(
    __name__, PIPELINE, DRIFT, "cv", "CV: retraining on drift or new data (cv-drift, CV chain)"
)
