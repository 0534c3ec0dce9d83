"""``mlcp audit``: is every state of a model explained by a record?

Only the pipeline should change what is live, and every change it makes is recorded
(:mod:`steps.registry.moves`). The audit reads the state back and looks for what no record explains:

- **aliases**: every alias of the model against the last recorded move of that alias
  (confirmed, or still RUNNING: unconfirmed). An alias that names another version than its
  last record says, an alias no record ever set, and an alias a record set that is gone are
  findings: someone moved it outside ``mlcp`` (the plain MLflow client, the UI).
- **serving slots**: what every replica serves on the ``live`` and ``staged`` slots against
  the versions those aliases name (:func:`steps.registry.serving_state.compare`, the serving check).
  A slot loaded by hand, or a replica that lost its slot, is a finding.

Each finding is printed with what the record (or the alias) says and what the registry (or
the server) says. The audit is recorded as a run in ``<pipeline>/audit`` (kind ``audit``) and
exits 3 when there are findings, 0 when everything is explained. It moves nothing: ``mlcp
promote`` (or ``mlcp serving sync``) puts things right, recorded.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from ..base import rest
from ..base.errors import EXIT_GATE_FAILED, EXIT_OK
from ..records import tracking
from ..spec.contract import (
    KIND_TAG,
    NO_PIPELINE,
    PIPELINE_TAG,
    SERVING_TAG,
    TAG_PREFIX,
    TRAFFIC,
    show_version,
)
from ..spec.declare import Config, Stage, option
from . import aliases, moves, serving_state

STAGE = "audit"  # the experiment <pipeline>/audit and the runs' kind
FINDINGS_TAG = TAG_PREFIX + "audit.findings"  # on an audit's run: the findings' lines; none


@dataclass
class Finding:
    model: str
    subject: str  # "alias live", "slot m-live on http://..."
    expected: str  # what the record (or, for a slot, the alias) says
    found: str  # what the registry (or the server) says

    def line(self) -> str:
        return f"{self.model}: {self.subject}: expected {self.expected}; found {self.found}"


@dataclass(kw_only=True)
class AuditConfig(Config):
    model_name: str = option(
        "", help="registered model name in MLflow (empty: every model a pipeline registered)"
    )
    json: bool = option(False, help="print JSON", argo=False)


def _describe(record: moves.Record) -> str:
    state = "" if record.status == "FINISHED" else ", unconfirmed"
    who = record.actor or "unknown"
    return (
        f"{show_version(record.to_version)} (recorded {record.action} by {who} at "
        f"{record.time}, run {record.run_id}{state})"
    )


def alias_findings(client, model: str) -> list[Finding]:
    """Every alias against its last recorded move (sync records move no alias: not read)."""
    current = {a: str(v) for a, v in aliases.get_model(client, model).aliases.items()}
    last: dict[str, moves.Record] = {}
    for record in moves.history(client, model):
        if record.alias == TRAFFIC:  # the router's weights: the serving check's rows
            continue
        if record.status != "FAILED" and record.action != serving_state.SYNC_ACTION:
            last[record.alias] = record
    found = []
    for alias in sorted(set(current) | {a for a, r in last.items() if r.to_version}):
        now = current.get(alias)
        record = last.get(alias)
        if record is None:
            found.append(
                Finding(model, f"alias {alias}", "no recorded move", f"{alias}={show_version(now)}")
            )
            continue
        unwritten = record.status == "RUNNING" and record.from_version == now
        if record.to_version != now and not unwritten:
            found.append(
                Finding(model, f"alias {alias}", _describe(record), f"{alias}={show_version(now)}")
            )
    return found


def slot_findings(client, model: str) -> list[Finding]:
    """What every replica serves against the aliases (the serving check's rows that drift)."""
    return [
        Finding(
            model,
            f"slot {row.slot} on {row.replica}",
            f"{row.alias}={row.show(row.expected)} served",
            f"unreachable: {row.error}"
            if row.error
            else f"serves {'nothing' if row.served is None else row.show(row.served)}",
        )
        for row in serving_state.compare(client, model)
        if not row.agrees
    ]


def audit(client, model: str) -> tuple[list[Finding], str]:
    """The model's findings, and the id of the run that records them."""
    registered = aliases.get_model(client, model)
    tags = dict(registered.tags)
    findings = alias_findings(client, model)
    if tags.get(SERVING_TAG):
        findings += slot_findings(client, model)
    pipeline = tags.get(PIPELINE_TAG, NO_PIPELINE)
    experiment_id = tracking.ensure_experiment(client, tracking.experiment_name(pipeline, STAGE))
    run_tags = tracking.context_tags(pipeline, STAGE, model)
    run_tags.update(
        {
            KIND_TAG: STAGE,
            FINDINGS_TAG: ("\n".join(f.line() for f in findings) or "none")[:4000],
        }
    )
    run = client.create_run(experiment_id, run_name=f"{model}-audit", tags=run_tags)
    metric = rest.metric_type(client)
    client.log_batch(
        run.info.run_id,
        metrics=[metric("findings", float(len(findings)), int(time.time() * 1000), 0)],
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return findings, run.info.run_id


def run_audit(cfg: AuditConfig) -> int:
    client = tracking.registry_client()
    models = [cfg.model_name] if cfg.model_name else aliases.models_tagged(client, PIPELINE_TAG)
    result = {}
    for model in models:
        findings, run_id = audit(client, model)
        result[model] = {"run_id": run_id, "findings": [asdict(f) for f in findings]}
        if not cfg.json:
            for finding in findings:
                print(finding.line())
            verdict = f"{len(findings)} finding(s)" if findings else "every state is explained"
            print(f"{model}: {verdict} (run {run_id})")
    if cfg.json:
        print(json.dumps(result, indent=2))
    elif not models:
        print("no registered model to audit")
    clean = all(not m["findings"] for m in result.values())
    return EXIT_OK if clean else EXIT_GATE_FAILED


AUDIT = Stage(
    "",
    STAGE,
    "find what no record explains: aliases moved outside mlcp, slots loaded by hand (exit 3 "
    "on findings)",
    AuditConfig,
    run_audit,
    title="Audit aliases and serving against the records",
    description=(
        "Compares every alias of a model (or of every model) with its last recorded move, and "
        "what every serving replica serves with the aliases; records a run in <pipeline>/audit "
        "and fails (exit 3) when something is not explained. Moves nothing."
    ),
)
