"""What MLflow's UI shows of an experiment before anyone opens a run: its kind and its
description, both experiment tags.

- ``mlflow.experimentKind``: MLflow 3's UI opens a ``genai_development`` experiment on its
  GenAI view (traces, judges) and a ``custom_model_development`` one on its model-training
  view (runs, charts). Untagged, it guesses, and a CV experiment opened on an empty traces
  page. A pipeline declares which of its stages are GenAI (``Pipeline.genai``): those whose
  runs are graded model answers, each a trace (``llm/evaluate``). Every other experiment is
  model development: training, deploy (the LLM's one smoke completion does not make a
  deploy run a GenAI record), perf-test (one summary at most, never a trace per request),
  drift, and the control plane's records below. (MLflow 3.17's UI picks the view from a
  global switch instead; the kind stays the record of what an experiment is, for the API,
  searches and the UIs that read it, and each description names the view to pick.)
- ``mlflow.note.content``: one sentence saying what the runs there record. A stage's is
  derived from its declaration (its command, help and gates); the control plane's own
  experiments (alias moves, policy changes, reproductions, failed workflows) are described
  here, by the name their module records under.

Standard library only (the declarations and the contract): the promote path, which talks to
MLflow's REST API without importing mlflow, tags the experiments it creates with these too.
"""

from __future__ import annotations

from .declare import Pipeline, Stage, declared_pipelines

KIND_TAG = "mlflow.experimentKind"  # MLflow's own tag key (its UI reads and writes it)
GENAI = "genai_development"
MODEL_DEVELOPMENT = "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"  # MLflow's description of an experiment or a run
# MLflow 3.17's UI opens every experiment on the view its global switch (top left: "GenAI" |
# "Model training", remembered by the browser, or ``?workflowType=`` in the link) names, and
# no longer on the experiment's kind; the description's last sentence says which to pick.
VIEW = {
    GENAI: "Open it in the UI's GenAI view (traces, judges; ?workflowType=genai).",
    MODEL_DEVELOPMENT: (
        "Open it in the UI's Model training view (runs, charts; ?workflowType=machine_learning)."
    ),
}

# The control plane's experiments, ``<pipeline>/<name>`` for every pipeline (and ``registry``
# for a model with none): the name each module records under (steps/registry/moves.py "promote",
# steps/registry/policy.py STAGE, steps/stages/reproduce.py NAME, steps/stages/workflow_exit.py
# STAGE; a test holds these names to those modules) and what one run there records.
CONTROL_PLANE = {
    "promote": (
        "One run per alias move of this pipeline's models (promote, rollback, a stage "
        "writing its output alias): the alias, the version it left and the version it names "
        "now, who moved it and why, and the gate decisions the move relied on; and one per "
        "weight change at the router (alias traffic, action shift or sync: the weights from "
        "and to, the slot)."
    ),
    "policy": (
        "One run per change of a model's promotion policy: the gates a promotion to live "
        "requires, before and after, and the reason given."
    ),
    "reproduce": (
        "One run per reproduction: a version trained again from its recorded params, seed "
        "and data, its metrics beside the original's, and the verdict (identical, within "
        "tolerance, differs)."
    ),
    "serving": (
        "One run per `mlcp serving check` of a model: whether every replica of its server "
        "serves the versions live and staged name, and the lines that do not."
    ),
    "audit": (
        "One run per `mlcp audit` of a model: the aliases and serving slots no recorded move "
        "explains (moved outside mlcp, loaded by hand), none when all is explained."
    ),
    "workflow": (
        "One run per workflow that did not succeed: the failed step, its exit code, the gate "
        "that refused and whether anyone was notified."
    ),
}


def _stages(pipeline: Pipeline) -> tuple[Stage, ...]:
    extra = (pipeline.drift, pipeline.rollout)
    return (*pipeline.stages, *(stage for stage in extra if stage))


def _stage_description(pipeline: Pipeline, stage: Stage, genai: bool) -> str:
    command = " ".join(("mlcp", *stage.command))
    gates = (
        f", and one decision run per gate it judges ({', '.join(stage.gates)})"
        if stage.gates
        else ""
    )
    traces = (
        " Every answer and every judgement is a trace linked to its run (the Traces tab)."
        if genai
        else ""
    )
    return (
        f"One run per `{command}` ({stage.help}): its params, metrics, data inputs and "
        f"evidence{gates}.{traces}"
    )


def experiment_tags(pipeline: str, stage: str) -> dict[str, str]:
    """The kind and description of experiment ``<pipeline>/<stage>`` as MLflow tags; empty
    for an experiment nothing declares (or whose pipeline is not loaded: ``steps.spec.pipelines``
    declares them), so that nothing is claimed about what is not known."""
    if stage in CONTROL_PLANE:
        return _tags(MODEL_DEVELOPMENT, CONTROL_PLANE[stage])
    for declared in declared_pipelines():
        if declared.name != pipeline:
            continue
        for found in _stages(declared):
            if found.name == stage:
                genai = stage in declared.genai
                description = _stage_description(declared, found, genai)
                return _tags(GENAI if genai else MODEL_DEVELOPMENT, description)
    return {}


def _tags(kind: str, description: str) -> dict[str, str]:
    return {KIND_TAG: kind, DESCRIPTION_TAG: f"{description} {VIEW[kind]}"}
