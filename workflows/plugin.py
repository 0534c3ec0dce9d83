"""plugin: reads a pipeline's aliases and writes them, as its declaration says: the templates
of a pipeline installed as a package of its own, built from its declaration alone.

A pipeline registered in the entry-point group ``mlcp.pipelines`` that has no template
modules here (``workflows/<name>_pipeline.py``, as cv and llm have) gets the same documents
from its :class:`~steps.spec.declare.Pipeline`: one ``<name>-<stage>`` WorkflowTemplate per stage
(the first, its training, labelled for the chart's training placement), ``<name>-pipeline``
(the chain of ``templateRef`` steps, then promote; or, when it declares a rollout and
``promotion=rollout``, ``<name>-rollout``), and ``<name>-drift`` with the suspended
``<name>-retrain`` CronWorkflow when it declares drift statistics. Resources are one modest
size for every step (a tabular model trains on a CPU in seconds); the declaration's
``resources`` overrides them. Every stage after the training mounts the volumes of the
pipeline's serving back end.
"""

from __future__ import annotations

from types import SimpleNamespace

from steps.spec.declare import Pipeline

from . import promote
from .common import (
    existing_volume,
    pipeline_template,
    retrain_cron_workflow,
    rollout_template,
    stage_template,
)
from .settings import Settings
from .specs import DRIFT_OUTPUTS

RESOURCES = ("250m", "512Mi", "1", "1Gi")  # CPU request, memory request, CPU and memory limit
DEADLINE = 1800
RETRAIN_SCHEDULE = "0 5 * * 1"  # an hour after llm-retrain


def serving_volumes(pipeline: Pipeline) -> tuple:
    """The volumes the pipeline's serving back end (its declaration's ``serving``) declares:
    every stage after the training mounts them, as a deploy writes into the server's
    repository there (the chart gives each claim, or takes it out where that server is not
    installed)."""
    if not pipeline.serving:
        return ()
    from steps.registry import backends

    return tuple(existing_volume(v) for v in backends.known()[pipeline.serving].volumes)


def templates(pipeline: Pipeline) -> tuple:
    """The ``template(settings)`` builders of ``pipeline``'s documents, in chain order."""
    resources = tuple(getattr(pipeline, "resources", None) or RESOURCES)
    volumes = serving_volumes(pipeline)
    stages = []
    for index, stage in enumerate(pipeline.stages):
        spec, template = stage_template(
            __name__,
            stage,
            resources,
            deadline=DEADLINE,
            training=index == 0,
            volumes=() if index == 0 else volumes,
        )
        stages.append((SimpleNamespace(SPEC=spec), template))
    rollout = None
    if pipeline.rollout is not None:
        spec, rollout_built = rollout_template(__name__, pipeline.rollout)
        rollout = SimpleNamespace(SPEC=spec)
    chain, chain_template = pipeline_template(
        __name__, pipeline, tuple(module for module, _ in stages), promote, rollout
    )
    built = [template for _, template in stages] + [chain_template]
    if rollout is not None:
        built.append(rollout_built)
    if pipeline.drift is not None:
        drift, drift_template = stage_template(
            __name__, pipeline.drift, resources, deadline=900, outputs=DRIFT_OUTPUTS
        )

        def retrain(settings: Settings | None = None):
            settings = settings or Settings()
            return retrain_cron_workflow(
                f"{pipeline.name}-retrain",
                chain,
                drift,
                title=f"{pipeline.name}: retraining on drift or new data",
                description=(
                    f"On '{RETRAIN_SCHEDULE}' ({settings.retrain_timezone}) runs {drift.name} "
                    f"for {pipeline.default_model}, then the {pipeline.name} chain when it says "
                    "so; installed suspended (argo cron resume)."
                ),
                schedule=RETRAIN_SCHEDULE,
                timezone=settings.retrain_timezone,
                suspend=True,
                model_name=pipeline.default_model,
                settings=settings,
            )

        retrain.__module__ = __name__
        built += [drift_template, retrain]
    return tuple(built)
