"""Build-time settings of the generated YAML (standard library only).

Read from the environment when ``make yaml`` (``python -m workflows.build``) runs; the
committed files use the defaults, and the test that regenerates them uses the defaults
too, whatever the environment says. Bad values fail the build with a clear message.

- ``MLCP_CV_RETRAIN_SCHEDULE`` (``0 3 * * 1``): cv-retrain's five-field cron schedule;
- ``MLCP_RETRAIN_TIMEZONE`` (``UTC``): the IANA time zone of every schedule (the retraining
  ones, serving-check-cron's and audit-cron's);
- ``MLCP_CV_RETRAIN_SUSPEND`` (``true``): cv-retrain is installed suspended; switch it on
  with ``argo cron resume cv-retrain`` (or build with ``false``);
- ``MLCP_CV_RETRAIN_MODEL`` (``resnet18-digits``): the model cv-retrain trains and promotes;
- ``MLCP_CV_TRAIN_GPUS`` (``0``): ``nvidia.com/gpu`` of cv-train (0: none);
- ``MLCP_LLM_RETRAIN_SCHEDULE`` (``0 4 * * 1``): llm-retrain's five-field cron schedule (an
  hour after cv-retrain, so the two do not compete for the cluster);
- ``MLCP_LLM_RETRAIN_SUSPEND`` (``true``): llm-retrain is installed suspended; switch it on
  with ``argo cron resume llm-retrain`` (or build with ``false``);
- ``MLCP_LLM_RETRAIN_MODEL`` (``tiny-llama-instruct``): the model llm-retrain trains and
  promotes;
- ``MLCP_LLM_TRAIN_GPUS`` (``0``): ``nvidia.com/gpu`` of llm-train (0: none; a real base model
  wants 1);
- ``MLCP_SERVING_CHECK_SCHEDULE`` (``*/10 * * * *``): serving-check-cron's schedule: every
  model with a serving back end checked against the registry (cheap: no model is loaded);
- ``MLCP_SERVING_CHECK_SUSPEND`` (``false``): installed running, unlike the retraining crons
  (it changes nothing); ``true`` installs it suspended;
- ``MLCP_AUDIT_SCHEDULE`` (``17 * * * *``): audit-cron's schedule, hourly;
- ``MLCP_AUDIT_SUSPEND`` (``false``): installed running (it changes nothing);
- ``MLCP_TTL_AFTER_SUCCESS`` (``86400``, a day): seconds a succeeded workflow is kept before
  Argo deletes it (``ttlStrategy.secondsAfterSuccess``);
- ``MLCP_TTL_AFTER_FAILURE`` (``604800``, a week): the same for a failed one, kept longer so
  that someone can read why it failed;
- ``MLCP_POD_GC`` (``OnPodSuccess``): the ``podGC`` strategy; the default deletes a step's pod
  as soon as it succeeds and keeps a failed pod (and its logs) until its workflow goes.

The chart's values ``workflows.ttlStrategy`` and ``workflows.podGC`` carry the same defaults
(a test compares them) and replace these at install time.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass

from steps.spec.declare import flag_value

CRON_FIELD = re.compile(r"[0-9A-Za-z*/,\-?LW#]+")
# Argo's podGC strategies (its validation refuses any other).
POD_GC_STRATEGIES = ("OnPodSuccess", "OnPodCompletion", "OnWorkflowSuccess", "OnWorkflowCompletion")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


@dataclass(frozen=True)
class Settings:
    cv_retrain_schedule: str = "0 3 * * 1"
    retrain_timezone: str = "UTC"
    cv_retrain_suspend: bool = True
    cv_retrain_model: str = "resnet18-digits"
    cv_train_gpus: int = 0
    llm_retrain_schedule: str = "0 4 * * 1"
    llm_retrain_suspend: bool = True
    llm_retrain_model: str = "tiny-llama-instruct"
    llm_train_gpus: int = 0
    ttl_after_success: int = 86400
    ttl_after_failure: int = 604800
    pod_gc: str = "OnPodSuccess"
    serving_check_schedule: str = "*/10 * * * *"
    serving_check_suspend: bool = False
    audit_schedule: str = "17 * * * *"
    audit_suspend: bool = False

    def __post_init__(self) -> None:
        _check_schedule("MLCP_SERVING_CHECK_SCHEDULE", self.serving_check_schedule)
        _check_schedule("MLCP_AUDIT_SCHEDULE", self.audit_schedule)
        _check_schedule("MLCP_CV_RETRAIN_SCHEDULE", self.cv_retrain_schedule)
        _check_schedule("MLCP_LLM_RETRAIN_SCHEDULE", self.llm_retrain_schedule)
        _check_timezone(self.retrain_timezone)
        _check_model("MLCP_CV_RETRAIN_MODEL", self.cv_retrain_model)
        _check_model("MLCP_LLM_RETRAIN_MODEL", self.llm_retrain_model)
        _check_gpus("MLCP_CV_TRAIN_GPUS", self.cv_train_gpus)
        _check_gpus("MLCP_LLM_TRAIN_GPUS", self.llm_train_gpus)
        _check_ttl("MLCP_TTL_AFTER_SUCCESS", self.ttl_after_success)
        _check_ttl("MLCP_TTL_AFTER_FAILURE", self.ttl_after_failure)
        if self.pod_gc not in POD_GC_STRATEGIES:
            raise ValueError(
                f"MLCP_POD_GC: {self.pod_gc!r} is not one of {', '.join(POD_GC_STRATEGIES)}"
            )


def _check_ttl(variable: str, seconds: int) -> None:
    if not 0 < seconds <= 365 * 86400:
        raise ValueError(f"{variable} must be 1..{365 * 86400} seconds, got {seconds}")


def _check_schedule(variable: str, schedule: str) -> None:
    fields = schedule.split()
    if len(fields) != 5 or not all(CRON_FIELD.fullmatch(f) for f in fields):
        raise ValueError(f"{variable}: not a five-field cron schedule: {schedule!r}")


def _check_model(variable: str, name: str) -> None:
    if not MODEL_NAME.fullmatch(name):
        raise ValueError(f"{variable}: not a model name: {name!r}")


def _check_gpus(variable: str, gpus: int) -> None:
    if not 0 <= gpus <= 16:
        raise ValueError(f"{variable} must be 0..16, got {gpus}")


def _check_timezone(name: str) -> None:
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"MLCP_RETRAIN_TIMEZONE: not an IANA time zone: {name!r}")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        if zoneinfo.available_timezones():  # a time zone database to check against
            raise ValueError(f"MLCP_RETRAIN_TIMEZONE: unknown time zone {name!r}") from None


def _parse(variable: str, kind: type, text: str) -> object:
    """A variable's text as the setting's type (a schedule's spaces are normalised)."""
    if kind is bool:
        try:
            return flag_value(text)
        except ValueError:
            raise ValueError(f"{variable}: expected true or false, got {text!r}") from None
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{variable}: expected a whole number, got {text!r}") from None
    return " ".join(text.split())


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings, each from its variable (``MLCP_`` + the field's name in capitals) when
    set and non-empty, else the default."""
    env = os.environ if environ is None else environ
    kinds = typing.get_type_hints(Settings)
    given: dict[str, object] = {}
    for f in dataclasses.fields(Settings):
        variable = f"MLCP_{f.name.upper()}"
        if value := env.get(variable, "").strip():
            given[f.name] = _parse(variable, kinds[f.name], value)
    return Settings(**given)
