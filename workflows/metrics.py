"""The Prometheus metrics the Argo controller exports for the templates (Argo's custom
metrics, declared in the templates and emitted by the controller when a step or a workflow
ends; nothing in the step image serves metrics).

Every metric is declared once here, as a :class:`Metric` with its help, its labels and an
example PromQL query, and the templates' ``metrics`` blocks are built from these, as is
the metrics reference of the documentation site (docs/reference/metrics.md).

Labels stay few-valued: pipeline, stage, model, gate, alias, action, status, exit code; never
a version number, a run id or a workflow name. Values and ``when`` conditions read the
variables Argo offers a metric (``{{status}}``, ``{{duration}}``, ``{{exitCode}}``,
``{{inputs.parameters.*}}``, ``{{outputs.parameters.*}}``; ``{{workflow.status}}`` and
``{{workflow.duration}}`` at workflow level). A ``when`` is evaluated as Argo evaluates any
``when``: the variables substituted, then a govaluate expression in which a bare word is a
string, so text that may be empty is quoted.

Standard library and hera only.
"""

from __future__ import annotations

from dataclasses import dataclass

from hera.workflows import models as m

from steps.base import outputs

# Argo prefixes every custom metric with this when it exports it; a counter is also given
# Prometheus' ``_total`` suffix by the exporter (Argo v3.6+).
EXPORTED_PREFIX = "argo_workflows_"

DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...]
    example: str  # a PromQL query, written with the exported name

    @property
    def exported(self) -> str:
        """The name Prometheus sees."""
        suffix = "_total" if self.kind == "counter" else ""
        return f"{EXPORTED_PREFIX}{self.name}{suffix}"

    def build(self, labels: dict[str, str], value: str, when: str | None = None) -> m.Prometheus:
        if tuple(labels) != self.labels:
            raise ValueError(f"{self.name}: labels {tuple(labels)} are not {self.labels}")
        kind = {
            "counter": {"counter": m.Counter(value=value)},
            "gauge": {"gauge": m.Gauge(value=value, realtime=False)},
            "histogram": {
                "histogram": m.Histogram(
                    value=value, buckets=[m.Amount(b) for b in DURATION_BUCKETS]
                )
            },
        }[self.kind]
        return m.Prometheus(
            name=self.name,
            help=self.help,
            labels=[m.MetricLabel(key=k, value=v) for k, v in labels.items()],
            when=when,
            **kind,
        )


STAGE_DURATION = Metric(
    "mlcp_stage_duration_seconds",
    "histogram",
    "Wall time of an mlcp step (train, deploy, evaluate, perf-test, promote), by result",
    ("pipeline", "stage", "status"),
    "histogram_quantile(0.9, sum by (le, stage) "
    '(rate(argo_workflows_mlcp_stage_duration_seconds_bucket{pipeline="cv"}[7d])))',
)
STAGE_FAILURES = Metric(
    "mlcp_stage_failures",
    "counter",
    "mlcp steps that did not succeed, by exit code (2 bad input, 3 a gate said no, 1 other)",
    ("pipeline", "stage", "exit_code"),
    'sum by (stage) (increase(argo_workflows_mlcp_stage_failures_total{exit_code="3"}[1d]))',
)
GATE_VALUE = Metric(
    "mlcp_gate_value",
    "gauge",
    "The value a quality gate judged, at the last judgement of the model",
    ("pipeline", "stage", "model", "gate"),
    'argo_workflows_mlcp_gate_value{model="resnet18-digits", gate="accuracy"}',
)
GATE_PASSED = Metric(
    "mlcp_gate_passed",
    "gauge",
    "1 when a quality gate passed at the last judgement of the model, 0 when it refused",
    ("pipeline", "stage", "model", "gate"),
    "argo_workflows_mlcp_gate_passed == 0",
)
ALIAS_MOVES = Metric(
    "mlcp_alias_moves",
    "counter",
    "Alias moves made by the promote step, by model, target alias and action",
    ("model", "alias", "action"),
    'sum by (model) (increase(argo_workflows_mlcp_alias_moves_total{action="rollback"}[30d]))',
)
PIPELINE_RUNS = Metric(
    "mlcp_pipeline_runs",
    "counter",
    "Pipeline workflows that ended, by pipeline and status (Succeeded, Failed, Error)",
    ("pipeline", "status"),
    "sum by (pipeline) "
    '(increase(argo_workflows_mlcp_pipeline_runs_total{status!="Succeeded"}[7d]))',
)
PIPELINE_DURATION = Metric(
    "mlcp_pipeline_duration_seconds",
    "histogram",
    "Wall time of a whole pipeline workflow, by pipeline and status",
    ("pipeline", "status"),
    "histogram_quantile(0.5, sum by (le, pipeline) "
    "(rate(argo_workflows_mlcp_pipeline_duration_seconds_bucket[30d])))",
)
METRICS = (
    STAGE_DURATION,
    STAGE_FAILURES,
    GATE_VALUE,
    GATE_PASSED,
    ALIAS_MOVES,
    PIPELINE_RUNS,
    PIPELINE_DURATION,
)

SUCCEEDED = "{{status}} == Succeeded"
NOT_SUCCEEDED = "{{status}} != Succeeded"


def output(name: str) -> str:
    return f"{{{{outputs.parameters.{name}}}}}"


def given(text: str) -> str:
    """A govaluate condition true when ``text`` (a variable that may be empty) is not."""
    return f"'{text}' != ''"


def step_metrics(
    pipeline: str,
    stage: str,
    *,
    gates: tuple[str, ...] = (),
    model: str | None = None,
    extra: tuple[m.Prometheus, ...] = (),
) -> m.Metrics:
    """A step template's metrics: its duration, its failures, each of its gates' value and
    verdict (``model``: the Argo expression of the model's name, needed with gates), and
    ``extra``. ``pipeline`` may itself be an expression (promote reads it from its
    outputs)."""
    found = [
        STAGE_DURATION.build(
            {"pipeline": pipeline, "stage": stage, "status": "{{status}}"}, "{{duration}}"
        ),
        STAGE_FAILURES.build(
            {"pipeline": pipeline, "stage": stage, "exit_code": "{{exitCode}}"},
            "1",
            when=NOT_SUCCEEDED,
        ),
    ]
    for gate in gates:
        labels = {"pipeline": pipeline, "stage": stage, "model": model or "", "gate": gate}
        value, passed = output(outputs.gate_value(gate)), output(outputs.gate_passed(gate))
        found.append(GATE_VALUE.build(labels, value, when=given(value)))
        found.append(GATE_PASSED.build(labels, passed, when=given(passed)))
    return m.Metrics(prometheus=[*found, *extra])


def alias_move_metric(model: str, alias: str, action_output: str) -> m.Prometheus:
    """The promote step's alias-move counter: one per promotion or rollback that moved the
    target alias (``action_output`` says which; a dry run or a no-op writes ``none``)."""
    action = output(action_output)
    return ALIAS_MOVES.build(
        {"model": model, "alias": alias, "action": action},
        "1",
        when=f"{SUCCEEDED} && ({action} == promote || {action} == rollback)",
    )


def workflow_metrics(pipeline: str) -> m.Metrics:
    """A pipeline workflow's own metrics, emitted when it ends."""
    labels = {"pipeline": pipeline, "status": "{{workflow.status}}"}
    return m.Metrics(
        prometheus=[
            PIPELINE_RUNS.build(labels, "1"),
            PIPELINE_DURATION.build(labels, "{{workflow.duration}}"),
        ]
    )
