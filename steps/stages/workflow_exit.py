"""record-exit: reads no alias and writes no alias; records why a workflow did not succeed.

The pipeline templates' Argo ``onExit`` handler runs ``mlcp record-exit`` when a workflow
ends Failed or Errored, with ``{{workflow.name}}``, ``{{workflow.status}}`` and
``{{workflow.failures}}``. It

1. finds the failed step among the failures (Argo lists every failed node: the workflow,
   the steps group, the retry parent and the pod; the pod's message carries the exit code);
2. finds why: the failing decision runs this workflow recorded (a gate that said no), else
   what the step's exit code means (:data:`steps.base.errors.EXIT_MEANINGS`);
3. records one run in ``<pipeline>/workflow`` (``mlcp.kind=workflow``, run name = the
   workflow's name): the status, the failed step and template, the exit code, the reason
   and the refusing gates as tags, the failures as ``failures.json``;
4. POSTs a short JSON document to ``$MLCP_NOTIFY_URL`` when it is set; a notification
   that fails is a warning and a tag, never a failed handler (the record is the main job).

It only records: no alias and no model-version tag is ever read-modified or set here.
Core side: no pipeline import, MLflow imported inside the functions.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..base import secrets
from ..base.environment import MLCP_NOTIFY_URL
from ..base.errors import EXIT_MEANINGS, BadInput, MlcpError, RecordFailed
from ..decisions import gates
from ..records import tracking
from ..registry.moves import quote, search_all
from ..spec.contract import (
    ARGO_TAG_PREFIX,
    EXIT_CODE_TAG,
    EXIT_REASON_TAG,
    FAILED_STEP_TAG,
    FAILED_TEMPLATE_TAG,
    GATE_TAG,
    KIND_TAG,
    MODEL_TAG,
    NOTIFICATION_TAG,
    REFUSED_BY_TAG,
    VERDICT_TAG,
    VERSION_TAG,
    WORKFLOW_STATUS_TAG,
)
from ..spec.declare import Config, Stage, option
from .stage import say

STAGE = "workflow"  # the experiment ``<pipeline>/workflow``, and the runs' kind
STATUSES = ("Succeeded", "Failed", "Error")  # Argo's {{workflow.status}}
NONE = "none"  # no failed step / template / exit code
UNKNOWN = "unknown"  # a failed step without an exit code (deadline exceeded, pod deleted)
NOTIFY_URL_VARIABLE = MLCP_NOTIFY_URL.name
NOTIFY_TIMEOUT_S = 10.0
SENT, NOT_CONFIGURED = "sent", "not configured"
EXIT_CODE_RE = re.compile(r"exit code (\d+)")
RETRY_SUFFIX_RE = re.compile(r"\(\d+\)$")  # evaluate(0): the first try of step evaluate
GROUP_RE = re.compile(r"^\[\d+\]$")  # [0]: a steps group, no step of its own
PIPELINE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
# A Kubernetes object name (DNS subdomain), which every Argo workflow name is.
WORKFLOW_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
MAX_TAG_CHARS = 4000  # well under MLflow's limit: a pod's message can be long
_log = say("record-exit")


# ---------------------------------------------------------------------------- the config


def pipeline_name(text: str) -> str:
    if not PIPELINE_RE.match(text):
        raise ValueError(
            f"invalid pipeline name {text!r}: lower-case letters, digits and -, "
            "starting with a letter (e.g. cv)"
        )
    return text


def workflow_name(text: str) -> str:
    if not WORKFLOW_NAME_RE.match(text):
        raise ValueError(
            f"invalid workflow name {text!r}: an Argo workflow's name (lower-case letters, "
            "digits, - and ., at most 253 characters)"
        )
    return text


@dataclass(frozen=True)
class Failure:
    """One failed (or errored) node of ``{{workflow.failures}}``."""

    display_name: str
    message: str
    template_name: str
    phase: str
    pod_name: str
    finished_at: str

    @property
    def exit_code(self) -> str | None:
        found = EXIT_CODE_RE.search(self.message)
        return found[1] if found else None

    @property
    def step(self) -> str:
        """The step's name: the display name without its retry suffix."""
        return RETRY_SUFFIX_RE.sub("", self.display_name).strip()

    @property
    def finished(self) -> datetime:
        """When it finished (RFC 3339); the earliest time when Argo gives none."""
        text = self.finished_at.strip()
        if not text:
            return datetime.min.replace(tzinfo=UTC)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return datetime.min.replace(tzinfo=UTC)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_failures(text: str) -> list[dict[str, Any]]:
    """``{{workflow.failures}}`` as a list of objects; ``""`` and ``null`` mean none.
    BadInput for malformed JSON, a non-list, or an item that is not an object."""
    text = text.strip()
    # Argo leaves the expression unresolved where the workflow recorded no failure.
    if text in ("", "null", "{{workflow.failures}}"):
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadInput(
            f"--failures is not valid JSON ({exc}); expected Argo's {{{{workflow.failures}}}}: "
            "a list of objects with displayName, message, templateName, phase, podName, "
            "finishedAt; nothing was recorded"
        ) from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise BadInput(
            f"--failures must be a JSON list (Argo's {{{{workflow.failures}}}}), got "
            f"{type(data).__name__}; nothing was recorded"
        )
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise BadInput(
                f"--failures item {index} is not an object but {type(item).__name__}; "
                "nothing was recorded"
            )
    return data


def failures_of(data: list[dict[str, Any]]) -> list[Failure]:
    def text(item: dict, key: str) -> str:
        value = item.get(key)
        return "" if value is None else str(value)

    return [
        Failure(
            display_name=text(item, "displayName"),
            message=text(item, "message"),
            template_name=text(item, "templateName"),
            phase=text(item, "phase"),
            pod_name=text(item, "podName"),
            finished_at=text(item, "finishedAt"),
        )
        for item in data
    ]


@dataclass(kw_only=True)
class ExitConfig(Config):
    # No {{...}} in the help texts: they become the template's parameter descriptions.
    pipeline: str = option(
        help="the pipeline whose workflow ended (cv, llm): the record goes to <pipeline>/workflow",
        parse=pipeline_name,
    )
    workflow_name: str = option(
        help="the Argo workflow's name (workflow.name)", parse=workflow_name
    )
    status: str = option(
        help="how the workflow ended (workflow.status)", choices=STATUSES, noun="workflow status"
    )
    failures: str = option(
        "",
        help="the failed nodes as a JSON list (workflow.failures; empty or null: none)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        # The flags' parsers check these too; a config built from Python is held to the same.
        for check, value in ((pipeline_name, self.pipeline), (workflow_name, self.workflow_name)):
            try:
                check(value)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
        parse_failures(self.failures)


# ---------------------------------------------------------------------------- the failed step


@dataclass(frozen=True)
class FailedStep:
    step: str  # evaluate; none
    template: str  # cv-evaluate; none
    exit_code: str  # 3; unknown; none
    message: str  # the node's message


def failed_step(failures: list[Failure], workflow: str = "") -> FailedStep:
    """The step that failed: the node with an exit code that finished last; without any
    (deadline exceeded, pod deleted), the last failed node, preferring a step's node to the
    workflow's own and a steps group's."""
    if not failures:
        return FailedStep(NONE, NONE, NONE, "")
    order = {id(f): i for i, f in enumerate(failures)}

    def last(candidates: list[Failure]) -> Failure:
        return max(candidates, key=lambda f: (f.finished, order[id(f)]))

    with_code = [f for f in failures if f.exit_code is not None]
    if with_code:
        node = last(with_code)
        return FailedStep(node.step, node.template_name or NONE, node.exit_code, node.message)
    steps = [f for f in failures if f.display_name != workflow and not GROUP_RE.match(f.step)]
    node = last(steps or failures)
    return FailedStep(node.step or NONE, node.template_name or NONE, UNKNOWN, node.message)


def exit_meaning(code: str) -> str:
    """What a step's exit code says (``steps/base/errors.py``), for the reason line."""
    if code == UNKNOWN:
        return "no exit code: the step did not finish (deadline exceeded, pod deleted or evicted)"
    if code.isdigit() and int(code) in EXIT_MEANINGS:
        return f"exit code {code}, {EXIT_MEANINGS[int(code)]}"
    if code == "137":
        return "exit code 137, killed (out of memory or SIGKILL)"
    return f"exit code {code}"


# ---------------------------------------------------------------------------- why


@dataclass(frozen=True)
class Refusal:
    """A failing decision run the workflow recorded."""

    run_id: str
    gate: str
    model: str
    version: str
    reasons: tuple[str, ...]

    def describe(self) -> str:
        text = f"gate {self.gate} refused {self.model} v{self.version}"
        return f"{text}: {', '.join(self.reasons)}" if self.reasons else text


def _reasons(client, run) -> tuple[str, ...]:
    """The reasons of a decision run: its ``decision.json`` (gates.py writes it), else what
    its params and metric say."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(run.info.run_id, "decision.json", folder)
            with open(path) as fh:
                reasons = json.load(fh).get("reasons") or []
        return tuple(str(r) for r in reasons)
    except Exception:  # a decision recorded without its artifact: rebuild what it says
        params, value = run.data.params, run.data.metrics.get("value")
        if "metric" not in params or value is None:
            return ()
        return (f"{params['metric']}={value:.6g} misses {params['op']} {params['threshold']}",)


def refusals(client, pipeline: str, workflow: str) -> list[Refusal]:
    """The failing decision runs of ``workflow`` in every ``<pipeline>/...`` experiment,
    oldest first."""
    prefix = tracking.experiment_name(pipeline, "")
    experiments = client.search_experiments(filter_string=f"name LIKE '{quote(prefix)}%'")
    if not experiments:
        return []
    flt = (
        f"tags.`{KIND_TAG}` = 'decision' AND tags.`{VERDICT_TAG}` = '{gates.FAIL}' "
        f"AND tags.`{ARGO_TAG_PREFIX}workflow_name` = '{quote(workflow)}'"
    )
    runs = search_all(client, [e.experiment_id for e in experiments], flt)
    runs.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))
    return [
        Refusal(
            run_id=r.info.run_id,
            gate=r.data.tags.get(GATE_TAG, "?"),
            model=r.data.tags.get(MODEL_TAG, "?"),
            version=r.data.tags.get(VERSION_TAG, "?"),
            reasons=_reasons(client, r),
        )
        for r in runs
    ]


def reason_line(status: str, failed: FailedStep, found: list[Refusal]) -> str:
    """One line saying why: the gates that refused, else the failed step's exit code."""
    if found:
        return "; ".join(dict.fromkeys(r.describe() for r in found))
    if failed.step == NONE:
        if status == "Succeeded":
            return "the workflow succeeded"
        return f"the workflow ended {status} with no failed step reported"
    text = f"step {failed.step} failed: {exit_meaning(failed.exit_code)}"
    return f"{text} ({failed.message})" if failed.message else text


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 1] + "…"


# ---------------------------------------------------------------------------- notification


def notify(url: str, document: dict) -> str:
    """POST ``document`` as JSON to a generic webhook: ``sent``, or ``failed: <why>`` (never
    raises; the URL, which may hold a secret token, is never printed nor recorded)."""
    # A generic webhook: urllib.request is the standard library's HTTP client, enough for
    # one small POST, and keeps the step free of another dependency.
    import urllib.error
    import urllib.request

    if not url.lower().startswith(("http://", "https://")):
        return f"failed: ${NOTIFY_URL_VARIABLE} is not an http(s) URL"
    request = urllib.request.Request(
        url,
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=NOTIFY_TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        return f"failed: HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return f"failed: {exc.reason}"
    except Exception as exc:  # a timeout, a reset connection, a malformed URL
        return f"failed: {type(exc).__name__}: {exc}"
    return SENT


# ---------------------------------------------------------------------------- the step


def record_exit(cfg: ExitConfig) -> dict:
    """Record how the workflow ended (see the module docstring); the summary as a dict.
    BadInput for malformed failures (nothing recorded), RecordFailed for an MLflow error."""
    failures = parse_failures(cfg.failures)
    failed = failed_step(failures_of(failures), cfg.workflow_name)
    _log(
        f"workflow {cfg.workflow_name} {cfg.status}: failed step {failed.step} "
        f"(template {failed.template}, exit code {failed.exit_code})"
    )
    client = tracking.client()
    experiment = tracking.experiment_name(cfg.pipeline, STAGE)
    try:
        found = refusals(client, cfg.pipeline, cfg.workflow_name)
    except MlcpError:
        raise
    except Exception as exc:
        raise RecordFailed(
            f"cannot search the decisions of workflow {cfg.workflow_name}: {exc}"
        ) from exc
    reason = reason_line(cfg.status, failed, found)
    refused_by = list(dict.fromkeys(r.gate for r in found))
    _log(f"reason: {reason}")

    # This step only records: it never reads-modifies or sets an alias or a model-version
    # tag (a failed workflow must leave the registry exactly as the failure left it).
    tags = tracking.context_tags(cfg.pipeline, STAGE, cfg.model_name)
    tags.update(
        {
            KIND_TAG: STAGE,
            ARGO_TAG_PREFIX + "workflow_name": cfg.workflow_name,
            WORKFLOW_STATUS_TAG: cfg.status,
            FAILED_STEP_TAG: _clip(failed.step),
            FAILED_TEMPLATE_TAG: _clip(failed.template),
            EXIT_CODE_TAG: failed.exit_code,
            EXIT_REASON_TAG: _clip(reason),
            REFUSED_BY_TAG: ",".join(refused_by),
            NOTIFICATION_TAG: "pending",
            "mlflow.note.content": _clip(f"Workflow `{cfg.workflow_name}` {cfg.status}: {reason}"),
        }
    )
    try:
        experiment_id = tracking.ensure_experiment(client, experiment)
        run = client.create_run(experiment_id, run_name=cfg.workflow_name, tags=tags)
        run_id = run.info.run_id
        client.log_text(run_id, json.dumps(failures, indent=2), "failures.json")
        client.set_terminated(run_id, "FINISHED" if cfg.status == "Succeeded" else "FAILED")
    except Exception as exc:
        raise RecordFailed(
            f"could not record the exit of workflow {cfg.workflow_name} in {experiment}: {exc}"
        ) from exc
    _log(f"recorded run {run_id} in {experiment}")

    summary = {
        "run_id": run_id,
        "experiment": experiment,
        "failed_step": failed.step,
        "template": failed.template,
        "exit_code": failed.exit_code,
        "reason": reason,
        "refused_by": refused_by,
    }
    url = (secrets.read(NOTIFY_URL_VARIABLE) or "").strip()
    if url:
        document = {
            "workflow": cfg.workflow_name,
            "status": cfg.status,
            "pipeline": cfg.pipeline,
            "model": cfg.model_name,
            "failed_step": failed.step,
            "template": failed.template,
            "exit_code": failed.exit_code,
            "reason": reason,
            "refused_by": refused_by,
            "mlflow_run_id": run_id,
            "experiment": experiment,
        }
        notified = notify(url, document)
        if notified == SENT:
            _log("notification sent")
        else:
            print(f"mlcp: warning: notification {notified}", file=sys.stderr, flush=True)
    else:
        notified = NOT_CONFIGURED
    try:
        client.set_tag(run_id, NOTIFICATION_TAG, _clip(notified))
    except Exception as exc:
        raise RecordFailed(f"could not record the notification on run {run_id}: {exc}") from exc
    summary["notified"] = notified
    return summary


EXIT = Stage(
    "",
    "record-exit",
    "record why a workflow did not succeed (the Argo exit handler's step)",
    ExitConfig,
    record_exit,
    title="Record a workflow's exit",
    description=(
        "Records a failed or errored workflow in MLflow (<pipeline>/workflow): the failed "
        "step, its exit code and the gate that refused, and notifies $MLCP_NOTIFY_URL."
    ),
)
