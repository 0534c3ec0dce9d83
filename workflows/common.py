"""What every step template shares: the image, the configuration, the security settings, the
retry rule and the outputs, built from a step's :class:`~workflows.specs.StepSpec`.

Configuration comes from the ConfigMap ``mlcp-config`` and credentials from the Secret
``mlcp-credentials`` (both envFrom; nothing secret is written into a template). The
container runs ``mlcp <command> --flag={{inputs.parameters.name}} ...``; the CLI writes its
outputs as files under ``$MLCP_OUTPUT_DIR``, which become the template's output parameters.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from hera.workflows import (
    ConfigMapEnvFrom,
    Container,
    EmptyDirVolume,
    Env,
    Parameter,
    Resources,
    RetryStrategy,
    SecretEnvFrom,
    WorkflowTemplate,
)
from hera.workflows import models as m

from .specs import StepSpec

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "mlflow-control-plane"
IMAGE_NAME = "mlcp-steps"
ENTRYPOINT = "mlcp"

CONFIG_MAP = "mlcp-config"
SECRET = "mlcp-credentials"

OUTPUT_DIR = "/tmp/outputs"
TMP_VOLUME = "tmp"  # /tmp is an emptyDir: the root filesystem is read-only
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

# Exit codes (steps/errors.py): 0 ok, 2 bad input, 3 gate said no, 1 anything else. Only 1
# is worth another attempt: bad input and a failed gate are final.
RETRY_EXPRESSION = "asInt(lastRetry.exitCode) == 1"
RETRY_LIMIT = 3
RETRY_BACKOFF = m.Backoff(duration="15s", factor=m.IntOrString(2), max_duration="5m")

PART_OF_LABEL = {"app.kubernetes.io/part-of": "mlflow-control-plane"}


def package_version() -> str:
    """The package version from pyproject.toml (the step image is tagged with it)."""
    pyproject = ROOT / "pyproject.toml"
    if pyproject.is_file():
        with pyproject.open("rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    return metadata.version(DISTRIBUTION)  # an installed copy without the source tree


def image() -> str:
    return f"{IMAGE_NAME}:{package_version()}"


def arguments(spec: StepSpec) -> list[Parameter]:
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
        for p in spec.params
    ]


def inputs(spec: StepSpec) -> list[Parameter]:
    """The step template's inputs, filled from the workflow's arguments by name."""
    return [
        Parameter(
            name=p.name,
            description=p.description,
            enum=list(p.enum) if p.enum else None,
            **({} if p.required else {"default": p.default}),
        )
        for p in spec.params
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
            value_from=m.ValueFrom(path=f"{OUTPUT_DIR}/{o.file}", default=""),
        )
        for o in spec.outputs
    ]


def env_from() -> list:
    """Settings from the ConfigMap, credentials from the Secret: never inline."""
    return [
        ConfigMapEnvFrom(name=CONFIG_MAP, optional=False),
        SecretEnvFrom(name=SECRET, optional=False),
    ]


def env() -> list[Env]:
    """Who and what runs the step (recorded with every alias move), and where outputs go."""
    return [
        Env(name="ARGO_WORKFLOW_NAME", value="{{workflow.name}}"),
        Env(name="ARGO_WORKFLOW_UID", value="{{workflow.uid}}"),
        Env(name="MLCP_ACTOR", value=ACTOR),
        Env(name="MLCP_OUTPUT_DIR", value=OUTPUT_DIR),
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


def step_container(spec: StepSpec, *, synchronization: m.Synchronization | None = None):
    """The container template running ``mlcp`` for ``spec``."""
    r = spec.resources
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
        resources=Resources(
            cpu_request=r.cpu_request,
            memory_request=r.memory_request,
            cpu_limit=r.cpu_limit,
            memory_limit=r.memory_limit,
        ),
        volumes=[EmptyDirVolume(name=TMP_VOLUME, mount_path="/tmp")],
        security_context=security_context(),
        retry_strategy=retry_strategy(),
        active_deadline_seconds=spec.active_deadline_seconds,
        synchronization=synchronization,
    )


def mutex(name: str) -> m.Synchronization:
    """A template-level mutex (Argo v3.6+ ``mutexes`` list; the singular form is gone)."""
    return m.Synchronization(mutexes=[m.Mutex(name=name)])


def step_workflow_template(
    spec: StepSpec, *, synchronization: m.Synchronization | None = None
) -> WorkflowTemplate:
    """A WorkflowTemplate whose entrypoint is the one step ``spec`` describes."""
    return WorkflowTemplate(
        name=spec.name,
        annotations={TITLE_ANNOTATION: spec.title, DESCRIPTION_ANNOTATION: spec.description},
        labels=dict(PART_OF_LABEL),
        entrypoint=spec.name,
        arguments=arguments(spec),
        templates=[step_container(spec, synchronization=synchronization)],
    )
