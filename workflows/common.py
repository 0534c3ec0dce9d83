"""What every step template shares: the image, the configuration, the security settings, the
retry rule and the outputs, built from a step's :class:`~workflows.specs.StepSpec`; and what
every pipeline shares: a chain of ``templateRef`` steps built from a
:class:`~workflows.specs.PipelineSpec`, and the CronWorkflow that starts one.

Configuration comes from the ConfigMap ``mlcp-config`` (envFrom) and credentials from the
Secret ``mlcp-credentials``, mounted as read-only files, never as environment variables
(steps/base/secrets.py: the steps read ``NAME_FILE`` paths, MLflow's client its credentials file,
the AWS clients their shared credentials file; nothing secret is written into a template). The
container runs ``mlcp <command> --flag={{inputs.parameters.name}} ...``; the CLI writes its
outputs as files under ``$MLCP_OUTPUT_DIR``, which become the template's output parameters.
"""

from __future__ import annotations

import dataclasses
import tomllib
from importlib import metadata
from pathlib import Path

from hera.workflows import (
    ConfigMapEnvFrom,
    Container,
    CronWorkflow,
    EmptyDirVolume,
    Env,
    ExistingVolume,
    Parameter,
    Resources,
    RetryStrategy,
    SecretVolume,
    Step,
    Steps,
    Suspend,
    WorkflowTemplate,
)
from hera.workflows import models as m

from steps.base import secrets
from steps.records.provenance import IMAGE_ENV
from steps.registry.backends import Volume
from steps.spec.declare import Pipeline, Stage
from steps.stages.drift import DATA_OUTPUT, RETRAIN_OUTPUT
from steps.stages.rollout import NEXT

from . import metrics
from .settings import Settings
from .specs import (
    APPROVAL,
    EXIT_OUTPUT,
    HELD_OUTPUT,
    PROMOTION,
    ROLLOUT_PREFIX,
    STAGE_OUTPUTS,
    Override,
    Param,
    PipelineSpec,
    StepSpec,
    gate_outputs,
    step_spec,
)
from .specs import Resources as SpecResources

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "mlflow-control-plane"
IMAGE_NAME = "mlcp-steps"
ENTRYPOINT = "mlcp"

CONFIG_MAP = "mlcp-config"
SECRET = "mlcp-credentials"

OUTPUT_DIR = "/tmp/outputs"
TMP_VOLUME = "tmp"  # /tmp is an emptyDir: the root filesystem is read-only
HOME = "/tmp"  # the steps' HOME, on that emptyDir (images/steps.Dockerfile)
RUN_AS_USER = 10001  # the step image's user (images/steps.Dockerfile)

TITLE_ANNOTATION = "workflows.argoproj.io/title"
DESCRIPTION_ANNOTATION = "workflows.argoproj.io/description"
CREATOR_LABEL = "workflows.argoproj.io/creator"
ACTOR_FALLBACK = "argo-workflows"
# Who submitted the workflow: the creator label Argo's server sets. A plain
# {{workflow.labels.<key>}} tag fails Argo's validation ("failed to resolve") whenever the
# label is absent (a CronWorkflow, kubectl create, server auth mode), so the label is read
# from the always-present labels JSON, with a fallback. Expression tags are not checked by
# Argo's validation; `workflow.labels.json` and expr's fromJSON need Argo v3.6+ (as do the
# `mutexes` the promote template holds).
ACTOR = f"{{{{=fromJSON(workflow.labels.json)['{CREATOR_LABEL}'] ?? '{ACTOR_FALLBACK}'}}}}"

# Exit codes (steps/base/errors.py): 0 ok, 2 bad input, 3 gate said no, 1 anything else. Only 1
# is worth another attempt: bad input and a failed gate are final.
RETRY_EXPRESSION = "asInt(lastRetry.exitCode) == 1"
# The metrics' pipeline label of a step that serves every pipeline's models at once.
ANY_PIPELINE = "all"
RETRY_LIMIT = 3
RETRY_BACKOFF = m.Backoff(duration="15s", factor=m.IntOrString(2), max_duration="5m")

PART_OF_LABEL = {"app.kubernetes.io/part-of": "mlflow-control-plane"}
# What the chart reads off a generated document: its pipeline, its stage, and whether it
# trains (the chart places training steps on the training nodes: charts/mlcp/values.yaml).
PIPELINE_LABEL = "mlcp.io/pipeline"
STAGE_LABEL = "mlcp.io/stage"
ROLE_LABEL = "mlcp.io/role"
TRAINING_ROLE = "training"

# Trainings that may run at once, per pipeline: an Argo semaphore whose size is a key of
# this ConfigMap (the chart creates it, one key per training template, sized by
# workflows.concurrency.training). A cron run and a manual one then queue for the GPUs.
SEMAPHORE_CONFIG_MAP = "mlcp-semaphores"

# The exit handler of the pipelines and crons: records a run that did not succeed in MLflow
# (steps/stages/workflow_exit.py) and, with a URL in the Secret, notifies. It never moves an alias.
EXIT_HANDLER = "exit-handler"
EXIT_STEP = "record-failure"
EXIT_WHEN = "{{workflow.status}} != Succeeded"


GPU_RESOURCE = "nvidia.com/gpu"
# A cron run that could not start on time (controller down) may still start this much later.
CRON_STARTING_DEADLINE_SECONDS = 3600
CRON_HISTORY_LIMIT = 3


def package_version() -> str:
    """The package version from pyproject.toml (the step image is tagged with it)."""
    pyproject = ROOT / "pyproject.toml"
    if pyproject.is_file():
        with pyproject.open("rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    return metadata.version(DISTRIBUTION)  # an installed copy without the source tree


def image() -> str:
    return f"{IMAGE_NAME}:{package_version()}"


def arguments(params: tuple[Param, ...]) -> list[Parameter]:
    """The workflow's arguments (what `argo submit -p` sets and the UI asks for).

    A required parameter gets no value, so Argo refuses a submission without it.
    """
    return [
        Parameter(
            name=p.name,
            description=p.description,
            enum=list(p.enum) if p.enum else None,
            **({} if p.required else {"value": p.default}),
        )
        for p in params
    ]


def inputs(spec: StepSpec | tuple[Param, ...]) -> list[Parameter]:
    """A template's inputs (a step's, or those ``params``), filled from the workflow's
    arguments by name."""
    params = spec.params if isinstance(spec, StepSpec) else spec
    return [
        Parameter(
            name=p.name,
            description=p.description,
            enum=list(p.enum) if p.enum else None,
            **({} if p.required else {"default": p.default}),
        )
        for p in params
    ]


def outputs(spec: StepSpec) -> list[Parameter]:
    """Output parameters read from the files the CLI writes under $MLCP_OUTPUT_DIR.

    The empty default keeps a step that failed before writing them (exit 2 or 3) from
    turning into an output error on top of its own failure.
    """
    return [
        Parameter(
            name=o.name,
            description=o.description,
            value_from=m.ValueFrom(path=f"{OUTPUT_DIR}/{o.file}", default=o.default),
        )
        for o in spec.outputs
    ]


def env_from() -> list:
    """Settings from the ConfigMap, never inline (credentials are files: secret_volumes)."""
    return [ConfigMapEnvFrom(name=CONFIG_MAP, optional=False)]


SECRET_VOLUME = "credentials"
MLFLOW_CREDENTIALS_VOLUME = "mlflow-credentials"
SECRET_FILE_MODE = 0o440  # owner root, group the pod's fsGroup (the chart sets 10001)


def secret_volumes() -> list[SecretVolume]:
    """The credentials Secret as read-only files: every key under secrets.MOUNT, and its
    MLflow credentials file where MLflow's client reads it (``$HOME/.mlflow/credentials``,
    optional: a Secret without it means no MLflow authentication)."""
    return [
        SecretVolume(
            name=SECRET_VOLUME,
            secret_name=SECRET,
            mount_path=secrets.MOUNT,
            read_only=True,
            default_mode=SECRET_FILE_MODE,
            optional=False,
        ),
        SecretVolume(
            name=MLFLOW_CREDENTIALS_VOLUME,
            secret_name=SECRET,
            mount_path=f"{HOME}/{secrets.MLFLOW_CREDENTIALS_DIR}",
            read_only=True,
            default_mode=SECRET_FILE_MODE,
            optional=True,
            items=[
                m.KeyToPath(
                    key=secrets.MLFLOW_CREDENTIALS_KEY, path=secrets.MLFLOW_CREDENTIALS_FILE
                )
            ],
        ),
    ]


def secret_env() -> list[Env]:
    """Where each credential's file is: paths, nothing secret."""
    return [
        Env(
            name=secrets.AWS_CREDENTIALS_ENV, value=f"{secrets.MOUNT}/{secrets.AWS_CREDENTIALS_KEY}"
        ),
        *(
            Env(name=secrets.file_variable(name), value=f"{secrets.MOUNT}/{name}")
            for name in secrets.STEP_SECRETS
        ),
    ]


def env() -> list[Env]:
    """Who and what runs the step (recorded with every alias move), the image it runs in
    (recorded on every run; the chart rewrites it with the container's image), where outputs
    go, and a writable home."""
    return [
        Env(name="ARGO_WORKFLOW_NAME", value="{{workflow.name}}"),
        Env(name="ARGO_WORKFLOW_UID", value="{{workflow.uid}}"),
        Env(name="MLCP_ACTOR", value=ACTOR),
        Env(name=IMAGE_ENV, value=image()),
        Env(name="MLCP_OUTPUT_DIR", value=OUTPUT_DIR),
        # The root filesystem is read-only: caches (matplotlib, torch, pip) go to /tmp.
        Env(name="HOME", value=HOME),
        *secret_env(),
    ]


def security_context() -> m.SecurityContext:
    return m.SecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=m.Capabilities(drop=["ALL"]),
        seccomp_profile=m.SeccompProfile(type="RuntimeDefault"),
    )


def retry_strategy() -> RetryStrategy:
    return RetryStrategy(
        limit=RETRY_LIMIT,
        retry_policy="Always",
        expression=RETRY_EXPRESSION,
        backoff=RETRY_BACKOFF,
    )


def resources(spec: StepSpec) -> Resources:
    """CPU and memory requests and limits; ``nvidia.com/gpu`` (request = limit) when asked."""
    r = spec.resources
    return Resources(
        cpu_request=r.cpu_request,
        memory_request=r.memory_request,
        cpu_limit=r.cpu_limit,
        memory_limit=r.memory_limit,
        **({"gpus": r.gpus, "gpu_flag": GPU_RESOURCE} if r.gpus > 0 else {}),
    )


def tolerations(spec: StepSpec) -> list[m.Toleration] | None:
    """GPU nodes are commonly tainted nvidia.com/gpu:NoSchedule; a GPU step tolerates it."""
    if spec.resources.gpus <= 0:
        return None
    return [m.Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")]


def existing_volume(volume: Volume) -> ExistingVolume:
    """A volume a serving back end declares (``steps/registry/backends.py``) as Hera's."""
    return ExistingVolume(name=volume.name, claim_name=volume.claim, mount_path=volume.mount_path)


def backend_volumes() -> tuple[ExistingVolume, ...]:
    """Every volume a registered serving back end needs to load a version, once each, in a
    stable order: what the promote step mounts, since it may load any back end's model."""
    from steps.registry import backends as backend

    found = dict.fromkeys(v for _, b in sorted(backend.known().items()) for v in b.volumes)
    return tuple(existing_volume(v) for v in found)


def step_container(
    spec: StepSpec,
    *,
    synchronization: m.Synchronization | None = None,
    volumes: tuple = (),
    step_metrics: m.Metrics | None = None,
):
    """The container template running ``mlcp`` for ``spec`` (``volumes``: besides /tmp;
    ``step_metrics``: what the controller exports when it ends, workflows/metrics.py)."""
    return Container(
        name=spec.name,
        image=image(),
        image_pull_policy="IfNotPresent",
        command=[ENTRYPOINT],
        args=spec.args(),
        inputs=inputs(spec),
        outputs=outputs(spec),
        env=env(),
        env_from=env_from(),
        resources=resources(spec),
        tolerations=tolerations(spec),
        volumes=[EmptyDirVolume(name=TMP_VOLUME, mount_path=HOME), *secret_volumes(), *volumes],
        security_context=security_context(),
        retry_strategy=retry_strategy(),
        active_deadline_seconds=spec.active_deadline_seconds,
        synchronization=synchronization,
        metrics=step_metrics,
    )


def model_mutex(spec: StepSpec) -> str:
    """The name of the mutex every template that moves a model's live traffic holds (promote,
    rollout, serving-sync): one per model, by the step's model-name reference."""
    return f"mlcp-promote-{spec.param('model-name').reference}"


def mutex(name: str) -> m.Synchronization:
    """A template-level mutex (Argo v3.6+ ``mutexes`` list; the singular form is gone)."""
    return m.Synchronization(mutexes=[m.Mutex(name=name)])


def semaphore(key: str) -> m.Synchronization:
    """A template-level semaphore sized by ``key`` of the ConfigMap SEMAPHORE_CONFIG_MAP."""
    return m.Synchronization(
        semaphores=[
            m.SemaphoreRef(
                config_map_key_ref=m.ConfigMapKeySelector(name=SEMAPHORE_CONFIG_MAP, key=key)
            )
        ]
    )


def cleanup(settings: Settings) -> dict:
    """What every workflow a template starts carries: a TTL after success and after failure
    (failures are kept longer, to be read) and a pod GC strategy (workflows/settings.py)."""
    return {
        "ttl_strategy": m.TTLStrategy(
            seconds_after_success=settings.ttl_after_success,
            seconds_after_failure=settings.ttl_after_failure,
        ),
        "pod_gc": m.PodGC(strategy=settings.pod_gc),
    }


def step_workflow_template(
    spec: StepSpec,
    *,
    settings: Settings | None = None,
    synchronization: m.Synchronization | None = None,
    volumes: tuple = (),
    gpus: int = 0,
    labels: dict[str, str] | None = None,
    step_metrics: m.Metrics | None = None,
) -> WorkflowTemplate:
    """A WorkflowTemplate whose entrypoint is the one step ``spec`` describes (``gpus``: the
    build setting of a training step)."""
    if gpus:
        spec = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, gpus=gpus))
    container = step_container(
        spec, synchronization=synchronization, volumes=volumes, step_metrics=step_metrics
    )
    return WorkflowTemplate(
        name=spec.name,
        annotations={TITLE_ANNOTATION: spec.title, DESCRIPTION_ANNOTATION: spec.description},
        labels={**PART_OF_LABEL, **(labels or {})},
        entrypoint=spec.name,
        arguments=arguments(spec.params),
        templates=[container],
        **cleanup(settings or Settings()),
    )


def stage_template(
    module: str,
    stage: Stage,
    resources: tuple[str, str, str, str],
    *,
    deadline: int,
    overrides: dict[str, Override] | None = None,
    volumes: tuple = (),
    gpus: str | None = None,
    training: bool = False,
    outputs: tuple | None = None,
):
    """The spec and the ``template(settings)`` builder of a pipeline stage's template.

    ``resources``: CPU request, memory request, CPU limit, memory limit; ``deadline``: the
    step's activeDeadlineSeconds; ``gpus``: the build setting naming the step's GPUs
    (workflows/settings.py); ``training``: the step trains, so it is labelled for the
    chart's training placement and holds its pipeline's training semaphore. Title,
    description and parameters come from the stage; the outputs and metrics from its gates
    (``outputs``: a step that is no gate stage's, e.g. drift, declares its own).
    """
    spec = step_spec(
        stage,
        name=stage.template_name,
        title=stage.title,
        description=stage.description,
        outputs=outputs if outputs is not None else (*STAGE_OUTPUTS, *gate_outputs(stage.gates)),
        resources=SpecResources(*resources),
        active_deadline_seconds=deadline,
        overrides=overrides or {},
    )
    labels = {PIPELINE_LABEL: stage.pipeline, STAGE_LABEL: stage.name}
    if training:
        labels[ROLE_LABEL] = TRAINING_ROLE
    step_metrics = metrics.step_metrics(
        stage.pipeline,
        stage.name,
        gates=stage.gates,
        model=spec.param("model-name").reference,
    )

    def template(settings: Settings | None = None) -> WorkflowTemplate:
        settings = settings or Settings()
        return step_workflow_template(
            spec,
            settings=settings,
            volumes=volumes,
            gpus=getattr(settings, gpus) if gpus else 0,
            labels=labels,
            step_metrics=step_metrics,
            synchronization=semaphore(spec.name) if training else None,
        )

    template.__module__ = module  # the generated file names its source module
    return spec, template


# The rollout template's steps: one run of every step, or (approval=true) a loop of runs of
# one step each (--until next), an Argo suspend between them, until a run no longer holds.
ROLLOUT_RUN = "run"  # the container template
ROLLOUT_ALL = "all-steps"  # approval=false: the one run
ROLLOUT_STEPWISE = "with-approval"  # approval=true: the loop
APPROVAL_LOOP = "approval-loop"
APPROVAL_SUSPEND = "wait-for-approval"
HELD_WHEN = f"{{{{steps.step.outputs.parameters.{HELD_OUTPUT.name}}}}} == true"


def _passed_through(spec: StepSpec, **values: str) -> list[Parameter]:
    """Every input of ``spec``'s container, given the caller's input of the same name (or
    ``values``)."""
    return [Parameter(name=p.name, value=values.get(p.name, p.reference)) for p in spec.params]


def rollout_template(module: str, stage: Stage):
    """The spec and the ``template(settings)`` builder of ``<pipeline>-rollout``.

    Its entry (named like the template, as a pipeline's ``templateRef`` names it) runs the
    container once with every step when ``approval`` is false. When it is true, it runs the
    approval loop: the container with ``--until next`` (one step, then the weight held), a
    ``suspend`` step (``argo resume`` continues), and the loop again, for as long as a run
    says it held. The container holds the promote template's mutex while it runs (a rollout
    and a promotion of one model never overlap); a suspended rollout holds none, so a
    rollback is never kept waiting for a person. It mounts what the back ends need to load a
    version (it keeps the old live one warm)."""
    spec = step_spec(
        stage,
        name=stage.template_name,
        title=stage.title,
        description=stage.description,
        outputs=(*STAGE_OUTPUTS, HELD_OUTPUT),
        resources=SpecResources("100m", "512Mi", "1", "1Gi"),
        active_deadline_seconds=4 * 3600,  # steps x step-duration, plus the loads
    )
    step_metrics = metrics.step_metrics(
        stage.pipeline, stage.name, model=spec.param("model-name").reference
    )
    approval = f"{{{{inputs.parameters.{APPROVAL.name}}}}}"

    def template(settings: Settings | None = None) -> WorkflowTemplate:
        settings = settings or Settings()
        with WorkflowTemplate(
            name=spec.name,
            annotations={TITLE_ANNOTATION: spec.title, DESCRIPTION_ANNOTATION: spec.description},
            labels={**PART_OF_LABEL, PIPELINE_LABEL: stage.pipeline, STAGE_LABEL: stage.name},
            entrypoint=spec.name,
            arguments=arguments((*spec.params, APPROVAL)),
            **cleanup(settings),
        ) as wt:
            container = step_container(
                dataclasses.replace(spec, name=ROLLOUT_RUN),
                synchronization=mutex(model_mutex(spec)),  # promote's: the same model
                volumes=backend_volumes(),
                step_metrics=step_metrics,
            )
            wait = Suspend(name=APPROVAL_SUSPEND)
            with Steps(name=APPROVAL_LOOP, inputs=inputs(spec)) as loop:
                Step(name="step", template=container, arguments=_passed_through(spec, until=NEXT))
                Step(name="approve", template=wait, when=HELD_WHEN)
                Step(
                    name="next",
                    template=APPROVAL_LOOP,
                    when=HELD_WHEN,
                    arguments=_passed_through(spec),
                )
            with Steps(name=spec.name, inputs=inputs((*spec.params, APPROVAL))):
                Step(
                    name=ROLLOUT_ALL,
                    template=container,
                    when=f"{approval} == false",
                    arguments=_passed_through(spec),
                )
                Step(
                    name=ROLLOUT_STEPWISE,
                    template=loop,
                    when=f"{approval} == true",
                    arguments=_passed_through(spec),
                )
        return wt

    template.__module__ = module
    return spec, template


# ------------------------------------------------------------------ pipelines


def workflow_parameter(param: Param) -> str:
    return f"{{{{workflow.parameters.{param.name}}}}}"


def stage_arguments(pipeline: PipelineSpec, spec: StepSpec) -> list[Parameter]:
    """What a pipeline passes a stage: the model name, its alias names, and (to promote) the
    gates the pipeline requires. Every other parameter keeps the stage template's default."""
    by_alias = {p.default: p for p in pipeline.alias_params()}
    passed = []
    for p in spec.params:
        if p.name == "model-name":
            value = workflow_parameter(p)
        elif p.is_alias:
            value = workflow_parameter(by_alias[p.default])
        elif p.name == "require-gates":
            value = ",".join(pipeline.require_gates)
        else:
            continue
        passed.append(Parameter(name=p.name, value=value))
    return passed


def exit_spec() -> StepSpec:
    """The exit handler's step: ``mlcp record-exit`` (steps/stages/workflow_exit.py)."""
    from steps.stages.workflow_exit import EXIT

    return step_spec(
        EXIT,
        name=EXIT.template_name,
        title=EXIT.title,
        description=EXIT.description,
        outputs=(EXIT_OUTPUT,),
        resources=SpecResources("100m", "256Mi", "1", "512Mi"),
        active_deadline_seconds=300,
    )


def exit_arguments(pipeline: PipelineSpec, spec: StepSpec) -> list[Parameter]:
    """What the exit handler passes ``mlcp record-exit``: Argo's account of the run."""
    values = {
        "model-name": "{{workflow.parameters.model-name}}",
        "pipeline": pipeline.pipeline,
        "workflow-name": "{{workflow.name}}",
        "status": "{{workflow.status}}",
        "failures": "{{workflow.failures}}",
    }
    missing = {p.name for p in spec.params if p.required} - set(values)
    if missing:
        raise ValueError(f"{spec.name}: the exit handler passes no {sorted(missing)}")
    return [Parameter(name=p.name, value=values[p.name]) for p in spec.params if p.name in values]


def exit_handling(pipeline: PipelineSpec) -> dict:
    """The workflow-level fields a pipeline's runs carry: the exit handler and the metrics
    the controller exports when the workflow ends (a CronWorkflow carries the same)."""
    return {"on_exit": EXIT_HANDLER, "metrics": metrics.workflow_metrics(pipeline.pipeline)}


def pipeline_workflow_template(
    pipeline: PipelineSpec, settings: Settings | None = None
) -> WorkflowTemplate:
    """A WorkflowTemplate running the pipeline's stages in order, each by ``templateRef`` to
    its own WorkflowTemplate. No ``continueOn``: a failed step (a gate said no, exit 3)
    fails the workflow and the later stages never run. When it did not succeed, the exit
    handler records why in MLflow (``<pipeline>/workflow``)."""
    record = exit_spec()
    with WorkflowTemplate(
        name=pipeline.name,
        annotations={
            TITLE_ANNOTATION: pipeline.title,
            DESCRIPTION_ANNOTATION: pipeline.description,
        },
        labels={**PART_OF_LABEL, PIPELINE_LABEL: pipeline.pipeline},
        entrypoint=pipeline.name,
        arguments=arguments(pipeline.params()),
        **exit_handling(pipeline),
        **cleanup(settings or Settings()),
    ) as wt:
        with Steps(name=pipeline.name):
            chain_steps(pipeline)
        exit_handler_steps(pipeline, record)
    return wt


DIRECT, ROLLOUT = PROMOTION.enum  # the values of the pipelines' promotion parameter
ROLLOUT_STEP = "rollout"


def promotion_when(value: str) -> str:
    """The ``when`` of the chain's last step that runs for ``promotion=value``."""
    return f"{workflow_parameter(PROMOTION)} == {value}"


def rollout_arguments(pipeline: PipelineSpec) -> list[Parameter]:
    """What a pipeline passes its rollout: the model and alias names and the gates (as to
    promote), and its own ``rollout-*`` parameters."""
    own = {p.name.removeprefix(ROLLOUT_PREFIX): p for p in pipeline.rollout_params()[1:]}
    return [
        *stage_arguments(pipeline, pipeline.rollout),
        *(Parameter(name=name, value=workflow_parameter(p)) for name, p in own.items()),
    ]


def chain_steps(pipeline: PipelineSpec, data: str | None = None) -> None:
    """The pipeline's stages in order, each by ``templateRef`` to its own WorkflowTemplate
    (inside a ``Steps`` context); ``data``: what the first stage (train) is given as its
    data set instead of the workflow's parameter. A pipeline with a rollout ends with two
    alternative steps, promote and rollout, of which ``promotion`` runs one (Argo ``when``)."""
    first, last = pipeline.stages[0][0], pipeline.stages[-1][0]
    for step_name, spec in pipeline.stages:
        passed = stage_arguments(pipeline, spec)
        if data is not None and step_name == first:
            passed.append(Parameter(name="data", value=data))
        Step(
            name=step_name,
            template_ref=m.TemplateRef(name=spec.name, template=spec.name),
            arguments=passed,
            when=promotion_when(DIRECT) if step_name == last and pipeline.rollout else None,
        )
    if pipeline.rollout is not None:
        Step(
            name=ROLLOUT_STEP,
            template_ref=m.TemplateRef(name=pipeline.rollout.name, template=pipeline.rollout.name),
            arguments=rollout_arguments(pipeline),
            when=promotion_when(ROLLOUT),
        )


def exit_handler_steps(pipeline: PipelineSpec, record: StepSpec) -> None:
    """The exit handler's template: ``mlcp record-exit`` when the workflow did not succeed."""
    with Steps(name=EXIT_HANDLER):
        Step(
            name=EXIT_STEP,
            template=record.name,
            when=EXIT_WHEN,
            arguments=exit_arguments(pipeline, record),
        )
    step_container(record)


def pipeline_template(
    module: str,
    pipeline: Pipeline,
    stage_modules: tuple,
    promote_module,
    rollout_module=None,
):
    """The spec and the ``template(settings)`` builder of a pipeline's template, from the
    pipeline's declaration and its stages' template modules (each with a ``SPEC``; the
    rollout's when the pipeline declares one)."""
    spec = PipelineSpec.of(
        pipeline,
        {m.SPEC.command[-1]: m.SPEC for m in stage_modules},
        promote_module.SPEC,
        name=f"{pipeline.name}-pipeline",
        title=pipeline.title,
        description=pipeline.description,
        rollout=None if rollout_module is None else rollout_module.SPEC,
    )

    def template(settings: Settings | None = None) -> WorkflowTemplate:
        return pipeline_workflow_template(spec, settings)

    template.__module__ = module
    return spec, template


def retrain_template(module: str, pipeline: PipelineSpec, drift: StepSpec, prefix: str, title: str):
    """The ``template(settings)`` builder of a pipeline's scheduled retraining: schedule, model
    and suspension from the build settings ``<prefix>_retrain_*`` (workflows/settings.py)."""

    def template(settings: Settings | None = None) -> CronWorkflow:
        settings = settings or Settings()
        model = getattr(settings, f"{prefix}_retrain_model")
        schedule = getattr(settings, f"{prefix}_retrain_schedule")
        return retrain_cron_workflow(
            f"{prefix}-retrain",
            pipeline,
            drift,
            title=title,
            description=(
                f"On '{schedule}' ({settings.retrain_timezone}) runs {drift.name} for {model}, "
                f"then the {pipeline.name} chain on the data it found only when it says "
                f"{RETRAIN_OUTPUT}=true (or {FORCE_RETRAIN}=true); a run still going makes the "
                "next one skip."
            ),
            schedule=schedule,
            timezone=settings.retrain_timezone,
            suspend=getattr(settings, f"{prefix}_retrain_suspend"),
            model_name=model,
            settings=settings,
        )

    template.__module__ = module
    return template


# The retrain crons: the drift step, then the chain only when it says so (or when forced).
DRIFT_STEP = "drift"
RETRAIN_STEP = "retrain"
CHAIN_TEMPLATE = "chain"
FORCE_RETRAIN = "force-retrain"
RETRAIN_WHEN = (
    f"{{{{steps.{DRIFT_STEP}.outputs.parameters.{RETRAIN_OUTPUT}}}}} == true || "
    f"{{{{workflow.parameters.{FORCE_RETRAIN}}}}} == true"
)


def cron_fields(
    name: str, title: str, description: str, schedule: str, timezone: str, suspend: bool
) -> dict:
    """What every CronWorkflow of the project sets alike: its schedule, a run still going
    when the next is due makes the next one skip (``Forbid``), a start missed by up to an
    hour still runs, the last runs kept, and its entrypoint named after it."""
    return {
        "name": name,
        "annotations": {TITLE_ANNOTATION: title, DESCRIPTION_ANNOTATION: description},
        "schedules": [schedule],
        "timezone": timezone,
        "concurrency_policy": "Forbid",
        "cron_suspend": suspend,
        "starting_deadline_seconds": CRON_STARTING_DEADLINE_SECONDS,
        "successful_jobs_history_limit": CRON_HISTORY_LIMIT,
        "failed_jobs_history_limit": CRON_HISTORY_LIMIT,
        "entrypoint": name,
    }


def retrain_parameters(pipeline: PipelineSpec, drift: StepSpec, model_name: str) -> list:
    """The cron's workflow parameters: the model, the drift step's data and policy (declared
    by the drift stage), force-retrain, and the chain's alias names."""
    model = next(p for p in pipeline.params() if p.name == "model-name")
    params = [
        Parameter(name=model.name, description=model.description, value=model_name),
        *arguments(tuple(drift.param(name) for name in ("data", "retrain-on-new-data"))),
        Parameter(
            name=FORCE_RETRAIN,
            description="true: run the chain whatever the drift step says (on the data it found)",
            value="false",
            enum=["false", "true"],
        ),
        *arguments(pipeline.params()[1:]),  # the alias names, how to promote
    ]
    return params


def retrain_cron_workflow(
    name: str,
    pipeline: PipelineSpec,
    drift: StepSpec,
    *,
    title: str,
    description: str,
    schedule: str,
    timezone: str,
    suspend: bool,
    model_name: str,
    settings: Settings | None = None,
) -> CronWorkflow:
    """A CronWorkflow that runs the pipeline's drift step, then its chain (the stage templates
    by ``templateRef``, training on the data the drift step found) only when the drift step
    says ``retrain=true`` or ``force-retrain`` is true (an Argo ``when``); a run still going
    when the next is due makes the next one skip (``Forbid``). Its runs carry the pipeline's
    exit handler and metrics and their own cleanup."""
    record = exit_spec()
    train = pipeline.stages[0][1]
    with CronWorkflow(
        **cron_fields(name, title, description, schedule, timezone, suspend),
        arguments=retrain_parameters(pipeline, drift, model_name),
        labels={**PART_OF_LABEL, PIPELINE_LABEL: pipeline.pipeline},
        **exit_handling(pipeline),
        **cleanup(settings or Settings()),
    ) as cron:
        with Steps(name=name):
            Step(
                name=DRIFT_STEP,
                template_ref=m.TemplateRef(name=drift.name, template=drift.name),
                arguments=[
                    Parameter(name=p.name, value=workflow_parameter(p))
                    for p in drift.params
                    if p.name in ("model-name", "data", "retrain-on-new-data")
                ],
            )
            Step(
                name=RETRAIN_STEP,
                template=CHAIN_TEMPLATE,
                when=RETRAIN_WHEN,
                arguments=[
                    Parameter(
                        name="data",
                        value=f"{{{{steps.{DRIFT_STEP}.outputs.parameters.{DATA_OUTPUT}}}}}",
                    )
                ],
            )
        with Steps(
            name=CHAIN_TEMPLATE,
            inputs=[Parameter(name="data", description=train.param("data").description)],
        ):
            chain_steps(pipeline, data="{{inputs.parameters.data}}")
        exit_handler_steps(pipeline, record)
    return cron


def step_cron_workflow(
    name: str,
    spec: StepSpec,
    *,
    title: str,
    schedule: str,
    suspend: bool,
    settings: Settings | None = None,
) -> CronWorkflow:
    """A CronWorkflow that runs one step template (``spec``, by ``templateRef``) on a
    schedule with its parameters' defaults as workflow arguments; the step's exit code is the
    run's outcome, so a check that says no (exit 3) shows in Argo as a failed workflow. A run
    still going when the next is due makes that one skip (``Forbid``)."""
    settings = settings or Settings()
    description = (
        f"On '{schedule}' ({settings.retrain_timezone}) runs {spec.name}: {spec.description}"
    )
    with CronWorkflow(
        **cron_fields(name, title, description, schedule, settings.retrain_timezone, suspend),
        arguments=arguments(spec.params),
        labels=dict(PART_OF_LABEL),
        **cleanup(settings),
    ) as cron:
        with Steps(name=name):
            Step(
                name=spec.name,
                template_ref=m.TemplateRef(name=spec.name, template=spec.name),
                arguments=[
                    Parameter(name=p.name, value=workflow_parameter(p)) for p in spec.params
                ],
            )
    return cron


def check_workflows(stage: Stage, *, title: str, setting: str):
    """The step template of a check that changes nothing (``stage``: its declaration) and its
    CronWorkflow ``<template>-cron``, scheduled by the build settings ``<setting>_schedule``
    and ``<setting>_suspend``: ``(spec, template(settings), cron(settings))``. The step is as
    small as promote's; its metrics' pipeline label is ``all`` (it serves every pipeline)."""
    spec = step_spec(
        stage,
        name=stage.template_name,
        title=stage.title,
        description=stage.description,
        outputs=(),
        resources=SpecResources("100m", "256Mi", "1", "1Gi"),
        active_deadline_seconds=600,
    )

    def template(settings: Settings | None = None) -> WorkflowTemplate:
        return step_workflow_template(
            spec, settings=settings, step_metrics=metrics.step_metrics(ANY_PIPELINE, spec.name)
        )

    def cron(settings: Settings | None = None) -> CronWorkflow:
        settings = settings or Settings()
        return step_cron_workflow(
            f"{spec.name}-cron",
            spec,
            title=title,
            schedule=getattr(settings, f"{setting}_schedule"),
            suspend=getattr(settings, f"{setting}_suspend"),
            settings=settings,
        )

    return spec, template, cron
