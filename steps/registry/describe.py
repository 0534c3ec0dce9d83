"""The descriptions MLflow's registry page shows, so that it reads well to someone who has
never seen ``mlcp``.

- A registered model's: what it is (its pipeline's ``model_description``), its pipeline and
  serving back end, the alias chain, and how to roll back (the command and the template).
  Written when a training stage first registers the model (:func:`register_model`), and on
  an older model that has none.
- A version's: one line by the stage that produced it (data digest, headline metric:
  :func:`trained`), then one line per stage whose gates it passed, added where decisions are
  recorded (:meth:`steps.stages.stage.Reporter.judge`, :func:`passed`). A stage judged again
  replaces its own line.

Core side: it reads a pipeline's declaration by name and never imports one.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..base.errors import BadInput, RecordFailed
from ..base.rest import error_code
from ..decisions.gates import Decision
from ..spec.contract import (
    CHAIN,
    LIVE,
    PIPELINE_TAG,
    PREVIOUS,
    SERVING_TAG,
    STAGED,
    live_slot,
    staged_slot,
)
from ..spec.declare import Pipeline, declared_pipeline, format_number
from . import aliases, policy
from .promote import PROMOTE, ROLLBACK


def model_description(pipeline: Pipeline, model: str) -> str:
    """The registered model's description (Markdown, as MLflow's UI renders it)."""
    rollback = " ".join(("mlcp", *ROLLBACK.command))
    template = PROMOTE.template_name
    chain = " → ".join(f"`{alias}`" for alias in CHAIN if alias != PREVIOUS)
    return "\n\n".join(
        (
            pipeline.model_description,
            f"Trained, deployed, evaluated and promoted by the `{pipeline.name}` pipeline of "
            "mlcp (Argo workflows with MLflow as their control plane), served by the "
            f"`{pipeline.serving}` back end: the version `{LIVE}` names answers in the "
            f"`{live_slot(model)}` slot, the one under test (`{STAGED}`) in "
            f"`{staged_slot(model)}`.",
            f"Each stage reads one alias and writes the next: {chain}; the version `{LIVE}` "
            f"named before is `{PREVIOUS}`. A version's description says what trained it "
            f"and which gates it passed; the runs are in the experiments "
            f"`{pipeline.name}/<stage>`.",
            f"Roll back (point `{LIVE}` at `{PREVIOUS}` and reload the live slot): "
            f"`{rollback} --model-name {model}`, or in the cluster `argo submit --from "
            f"workflowtemplate/{template} -p model-name={model} -p source-alias={PREVIOUS} "
            f"-p target-alias={LIVE}`.",
        )
    )


def check_owner(registered, pipeline_name: str) -> None:
    """BadInput when registered model ``registered`` (None: not registered yet) belongs to
    another pipeline than ``pipeline_name``: a model's pipeline is part of its contract (its
    serving back end, its gates), so a stage never writes a version of another's model."""
    owner = registered.tags.get(PIPELINE_TAG) if registered is not None else None
    if owner and owner != pipeline_name:
        raise BadInput(
            f"model {registered.name!r} belongs to the {owner!r} pipeline, not {pipeline_name!r}"
        )


def register_model(client, model: str, pipeline_name: str) -> None:
    """Create registered model ``model`` for pipeline ``pipeline_name``: its pipeline and
    serving tags, its promotion policy (every gate of the pipeline, steps/registry/policy.py) and
    its description. When it exists, its serving tag is set again and a missing description
    written; its policy is left as it is."""
    pipeline = declared_pipeline(pipeline_name)
    description = model_description(pipeline, model)
    try:
        client.create_registered_model(
            model,
            tags={
                PIPELINE_TAG: pipeline.name,
                SERVING_TAG: pipeline.serving,
                **policy.initial_tags(pipeline.gates),
            },
            description=description,
        )
        return
    except Exception as exc:
        if error_code(exc) != "RESOURCE_ALREADY_EXISTS":  # only "it exists" is fine
            raise
        existing = aliases.get_model(client, model)
    client.set_registered_model_tag(model, SERVING_TAG, pipeline.serving)
    if not (existing.description or "").strip():
        client.update_registered_model(model, description=description)


def trained(command: str, digest: str, source: str, metric: str, value: float) -> str:
    """The first line of a version's description, by the stage that trained it."""
    return (
        f"Trained by `{command}` on data `{digest}` ({source}): {metric} "
        f"{format_number(round(value, 4))}."
    )


def _line_of(command: str) -> str:
    return f"- `{command}` passed "


def passed(command: str, decisions: Iterable[Decision]) -> str:
    """The line a stage whose gates all passed adds to the version's description."""
    parts = []
    for d in decisions:
        if d.value is None:  # a champion gate with no champion: passed, nothing compared
            parts.append(f"{d.gate.name} (no champion)")
        else:
            parts.append(
                f"{d.gate.name} ({d.gate.metric} {format_number(round(d.value, 4))} "
                f"{d.gate.op} {format_number(d.gate.threshold)})"
            )
    return _line_of(command) + ", ".join(parts)


def describe_version(client, model: str, version: str | int, line: str, *, first: bool) -> None:
    """Write ``line`` into the version's description: as its first line (``first``: the
    stage that produced the version), or as a stage's line, replacing that stage's earlier
    one. RecordFailed when it cannot be written."""
    version = str(version)
    try:
        current = client.get_model_version(model, version).description or ""
        lines = [text for text in current.split("\n") if text.strip()]
        if first:
            lines = [line, *(text for text in lines if text.startswith("- "))]
        else:
            stage = line[: line.index(" passed ")]
            lines = [text for text in lines if not text.startswith(stage + " passed ")]
            lines.append(line)
        client.update_model_version(model, version, description="\n".join(lines))
    except Exception as exc:
        raise RecordFailed(f"could not describe {model} v{version}: {exc}") from exc
