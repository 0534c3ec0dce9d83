"""The environment variables the steps read, each declared once, typed (as MLflow's
``mlflow/environment_variables.py``): its name, type, default and what it means.

A module reads a variable through its declaration, ``MLCP_DATA_ROOT.get()``, never through
``os.environ`` (a test checks it: only this module reads the environment; writing variables
for a child process is not reading). ``get()`` is the value parsed to the variable's type,
or its default when the variable is unset or empty; a value that does not parse is bad
input naming the variable. The reference page ``docs/reference/environment.md`` lists them
all (``python -m steps.docs``).

The variables keep their names (``MLCP_*``; MLflow's, AWS's, Argo's and Kubernetes' own
where the steps read those). Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Generic, TypeVar

from .errors import BadInput, MlcpError

T = TypeVar("T")

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")

# Every declared variable, by name, in the order of this module (the reference page's order).
VARIABLES: dict[str, Variable] = {}


class Variable(Generic[T]):
    """One environment variable: ``name``, its ``type`` (str, int, float, bool or Path), the
    ``default`` ``get()`` gives when it is unset or empty, ``help`` (what it means, for the
    reference page) and ``group`` (the page's section)."""

    def __init__(self, name: str, type: type[T], default: T | None, help: str, group: str):
        if name in VARIABLES:
            raise MlcpError(f"environment variable {name} is declared twice")
        self.name = name
        self.type = type
        self.default = default
        self.help = help
        self.group = group
        VARIABLES[name] = self

    def __repr__(self) -> str:
        return f"Variable({self.name!r}, {self.type.__name__}, default={self.default!r})"

    @property
    def raw(self) -> str:
        """The value as the environment holds it, surrounding whitespace removed; "" when
        unset."""
        return os.environ.get(self.name, "").strip()

    def is_set(self) -> bool:
        """Whether the variable is set to a non-empty value."""
        return bool(self.raw)

    def get(self) -> T | None:
        """The value parsed to the variable's type; the default when unset or empty. BadInput
        naming the variable when the value does not parse."""
        value = self.raw
        if not value:
            return self.default
        if self.type is bool:
            if value.lower() in TRUE:
                return True  # type: ignore[return-value]
            if value.lower() in FALSE:
                return False  # type: ignore[return-value]
            raise BadInput(f"${self.name}={value!r}: not a boolean (true/false, 1/0, yes/no)")
        try:
            return self.type(value)  # type: ignore[call-arg]
        except ValueError:
            raise BadInput(f"${self.name}={value!r}: not a {self.type.__name__}") from None


def variable(name: str) -> Variable:
    """The declaration of ``name``; MlcpError when it is not declared here (a step reads only
    declared variables)."""
    try:
        return VARIABLES[name]
    except KeyError:
        raise MlcpError(
            f"environment variable {name} is not declared in steps/base/environment.py"
        ) from None


def is_set(name: str) -> bool:
    """Whether ``name`` is set to a non-empty value, declared here or not: for the stack's
    env file, which also holds a plugin's variables (steps/base/settings.py ``load_env``)."""
    return bool(os.environ.get(name, "").strip())


def secret(name: str, help: str, group: str) -> Variable[str]:
    """A secret setting: ``NAME``, and ``NAME_FILE``, the file it is read from when ``NAME``
    is unset (where the templates mount the credentials Secret; steps/base/secrets.py)."""
    variable = Variable(name, str, None, help, group)
    Variable(name + "_FILE", Path, None, f"the file {name} is read from when it is unset", group)
    return variable


# ---------------------------------------------------------------------------- the services

SERVICES = "Where the steps find their services"
MLFLOW_TRACKING_URI = Variable(
    "MLFLOW_TRACKING_URI", str, None, "the MLflow tracking server (required)", SERVICES
)
MLCP_HOME = Variable(
    "MLCP_HOME",
    Path,
    None,
    "the local stack's folder (default: .mlcp in the working folder)",
    SERVICES,
)
MLCP_DATA_ROOT = Variable(
    "MLCP_DATA_ROOT",
    str,
    None,
    "where data sets are published and read: s3://bucket/prefix or a folder",
    SERVICES,
)
AWS_ENDPOINT_URL = Variable(
    "AWS_ENDPOINT_URL", str, None, "the S3-compatible endpoint (else MLflow's)", SERVICES
)
MLFLOW_S3_ENDPOINT_URL = Variable(
    "MLFLOW_S3_ENDPOINT_URL",
    str,
    None,
    "MLflow's S3 endpoint, when AWS_ENDPOINT_URL is unset",
    SERVICES,
)
MLCP_OUTPUT_DIR = Variable(
    "MLCP_OUTPUT_DIR",
    Path,
    None,
    "where a step writes its outputs as files (Argo's output parameters); unset: none",
    SERVICES,
)
MLCP_ENV_CACHE = Variable(
    "MLCP_ENV_CACHE",
    Path,
    None,
    "a folder of serving environments shared between stacks (tritonserver, vLLM, ...)",
    SERVICES,
)

# ---------------------------------------------------------------------------- MLflow's client

CLIENT = "The MLflow REST client (MLflow's own variables)"
MLFLOW_TRACKING_USERNAME = secret(
    "MLFLOW_TRACKING_USERNAME", "basic-auth user (else ~/.mlflow/credentials)", CLIENT
)
MLFLOW_TRACKING_PASSWORD = secret(
    "MLFLOW_TRACKING_PASSWORD", "basic-auth password (secret)", CLIENT
)
MLFLOW_TRACKING_TOKEN = Variable(
    "MLFLOW_TRACKING_TOKEN", str, None, "a bearer token instead of basic auth (secret)", CLIENT
)
MLFLOW_TRACKING_INSECURE_TLS = Variable(
    "MLFLOW_TRACKING_INSECURE_TLS", bool, False, "do not verify the server's certificate", CLIENT
)
MLFLOW_TRACKING_SERVER_CERT_PATH = Variable(
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    str,
    None,
    "the CA bundle the server's certificate is checked with",
    CLIENT,
)
MLFLOW_TRACKING_CLIENT_CERT_PATH = Variable(
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    str,
    None,
    "a client certificate (and key) for mutual TLS",
    CLIENT,
)
MLFLOW_HTTP_REQUEST_TIMEOUT = Variable(
    "MLFLOW_HTTP_REQUEST_TIMEOUT", float, 120.0, "seconds one request may take", CLIENT
)
MLFLOW_HTTP_REQUEST_MAX_RETRIES = Variable(
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    int,
    7,
    "retries of a request that failed to connect or answered 5xx/429",
    CLIENT,
)
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR = Variable(
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    float,
    2.0,
    "the exponential backoff's factor between retries",
    CLIENT,
)
MLCP_REST_TRACE = Variable(
    "MLCP_REST_TRACE",
    Path,
    None,
    "a file every REST call is appended to, one JSON line each (the bench)",
    CLIENT,
)

# ---------------------------------------------------------------------------- who and what runs

RUN = "Who and what is running a step"
MLCP_ACTOR = Variable(
    "MLCP_ACTOR", str, None, "who acts, recorded on every alias move (default: user@host)", RUN
)
ARGO_WORKFLOW_NAME = Variable(
    "ARGO_WORKFLOW_NAME",
    str,
    None,
    "the Argo workflow running the step (set by the templates)",
    RUN,
)
ARGO_WORKFLOW_UID = Variable(
    "ARGO_WORKFLOW_UID", str, None, "that workflow's uid (set by the templates)", RUN
)
MLCP_GIT_COMMIT = Variable(
    "MLCP_GIT_COMMIT",
    str,
    None,
    "the commit of the code (else the checkout's; the image sets it)",
    RUN,
)
MLCP_IMAGE = Variable("MLCP_IMAGE", str, None, "the image the step runs in (default: local)", RUN)
MLCP_DEBUG = Variable("MLCP_DEBUG", bool, False, "print the traceback of an unexpected error", RUN)
MLCP_TEST_PAUSE_AFTER_RECORD_S = Variable(
    "MLCP_TEST_PAUSE_AFTER_RECORD_S",
    float,
    None,
    "a test hook: promote sleeps this long once its move records are open (crash tests)",
    RUN,
)
MLCP_NOTIFY_URL = secret(
    "MLCP_NOTIFY_URL", "where a failed workflow is reported (secret: a webhook URL)", RUN
)

# ---------------------------------------------------------------------------- the router

ROUTER = "The router (gradual rollouts)"
MLCP_ROUTER_URL = Variable(
    "MLCP_ROUTER_URL", str, None, "where clients call the models through the router", ROUTER
)
MLCP_ROUTER_STATS_URL = Variable(
    "MLCP_ROUTER_STATS_URL", str, None, "the router's read-only statistics listener", ROUTER
)
MLCP_ROUTER_CONFIG_DIR = Variable(
    "MLCP_ROUTER_CONFIG_DIR", Path, None, "local: the folder of the router's desired state", ROUTER
)
MLCP_ROUTER_CONFIGMAP = Variable(
    "MLCP_ROUTER_CONFIGMAP", str, None, "cluster: namespace/name of the router's ConfigMap", ROUTER
)
MLCP_ROUTER_APPLY_TIMEOUT_S = Variable(
    "MLCP_ROUTER_APPLY_TIMEOUT_S",
    float,
    60.0,
    "seconds a weight change may take to show at the router",
    ROUTER,
)
KUBERNETES_SERVICE_HOST = Variable(
    "KUBERNETES_SERVICE_HOST",
    str,
    "kubernetes.default.svc",
    "the Kubernetes API's host (set in every pod)",
    ROUTER,
)
KUBERNETES_SERVICE_PORT = Variable(
    "KUBERNETES_SERVICE_PORT", int, 443, "the Kubernetes API's port (set in every pod)", ROUTER
)

# ---------------------------------------------------------------------------- Triton

TRITON = "Triton (the cv pipeline's server)"
MLCP_TRITON_URL = Variable("MLCP_TRITON_URL", str, None, "Triton's HTTP URL", TRITON)
MLCP_TRITON_GRPC_URL = Variable(
    "MLCP_TRITON_GRPC_URL", str, None, "Triton's gRPC address (loads go over it when set)", TRITON
)
MLCP_TRITON_REPLICAS = Variable(
    "MLCP_TRITON_REPLICAS",
    str,
    None,
    "every Triton replica, comma-separated (else the one URL)",
    TRITON,
)
MLCP_TRITON_REPOSITORY = Variable(
    "MLCP_TRITON_REPOSITORY",
    str,
    None,
    "Triton's model repository, where a slot's desired state is written",
    TRITON,
)
MLCP_TRITON_CONTROL_KEY = secret(
    "MLCP_TRITON_CONTROL_KEY", "the key of Triton's model-control API (secret)", TRITON
)

# ---------------------------------------------------------------- vLLM and the llm pipeline

VLLM = "vLLM and the llm pipeline"
MLCP_VLLM_URL = Variable("MLCP_VLLM_URL", str, None, "vLLM's URL", VLLM)
MLCP_VLLM_REPLICAS = Variable(
    "MLCP_VLLM_REPLICAS", str, None, "every vLLM replica, comma-separated (else the one URL)", VLLM
)
MLCP_VLLM_API_KEY = secret("MLCP_VLLM_API_KEY", "vLLM's API key (secret)", VLLM)
MLCP_VLLM_ADAPTER_DIR = Variable(
    "MLCP_VLLM_ADAPTER_DIR", Path, None, "the adapter volume as the steps see it", VLLM
)
MLCP_VLLM_SERVER_ADAPTER_DIR = Variable(
    "MLCP_VLLM_SERVER_ADAPTER_DIR",
    Path,
    None,
    "the adapter volume as vLLM sees it (default: the same)",
    VLLM,
)
MLCP_VLLM_BASE_REVISION = Variable(
    "MLCP_VLLM_BASE_REVISION", str, None, "the pinned commit of the hub base vLLM serves", VLLM
)
MLCP_VLLM_BASE_HIDDEN_SIZE = Variable(
    "MLCP_VLLM_BASE_HIDDEN_SIZE",
    int,
    None,
    "the served base's hidden size, when its config.json is not readable here",
    VLLM,
)
MLCP_LLM_BASE_MODEL = Variable(
    "MLCP_LLM_BASE_MODEL",
    str,
    None,
    "the base model to train on and serve (default: the project's tiny base)",
    VLLM,
)
MLCP_LLM_BASE_REVISION = Variable(
    "MLCP_LLM_BASE_REVISION", str, None, "the pinned revision of MLCP_LLM_BASE_MODEL", VLLM
)
MLCP_CACHE_DIR = Variable(
    "MLCP_CACHE_DIR",
    Path,
    None,
    "where fetched base models are kept (default: the temp folder's mlcp-cache)",
    VLLM,
)
MLCP_JUDGE_URL = Variable(
    "MLCP_JUDGE_URL", str, None, "the OpenAI-compatible endpoint of the evaluation's judge", VLLM
)
MLCP_JUDGE_MODEL = Variable("MLCP_JUDGE_MODEL", str, None, "the judge's model name", VLLM)
MLCP_JUDGE_API_KEY = secret("MLCP_JUDGE_API_KEY", "the judge endpoint's key (secret)", VLLM)

# ---------------------------------------------------------------------------- MLflow's users

USERS = "MLflow's users (mlcp auth, the local stack with --auth)"
MLFLOW_AUTH_ADMIN_USERNAME = secret(
    "MLFLOW_AUTH_ADMIN_USERNAME", "the admin user of MLflow's basic-auth app", USERS
)
MLFLOW_AUTH_ADMIN_PASSWORD = secret(
    "MLFLOW_AUTH_ADMIN_PASSWORD", "the admin user's password (secret)", USERS
)
MLCP_READ_ONLY_USERNAME = secret(
    "MLCP_READ_ONLY_USERNAME", "the read-only user (dashboards, people who look)", USERS
)
MLCP_READ_ONLY_PASSWORD = secret(
    "MLCP_READ_ONLY_PASSWORD", "the read-only user's password (secret)", USERS
)
