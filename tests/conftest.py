"""One real local stack for the whole test session.

The session starts the project's own stack (``steps.local.stack.up``): a real MLflow tracking
server (sqlite backend, proxied artifacts), a real S3-compatible endpoint (nanio, on disk)
and two real ``tritonserver`` replicas, on free loopback ports in a temporary folder; the LLM
tests add the stack's real vLLM (``vllm_server``). Nothing here mocks MLflow, S3 or a server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from steps.serving import envs
from steps.spec import determinism

ROOT = Path(__file__).resolve().parents[1]
determinism.sleeping_threads()  # as `mlcp` does: for the torch of this process and its children


# Serving environments (tritonserver's, vLLM's) are built once per set of requirements in this
# checkout's `.mlcp/env-cache/` and linked into every stack folder the tests start (the
# session's, and those of tests that need a stack of their own); later runs reuse them.
ENV_CACHE = Path(os.environ.get(envs.CACHE_VAR) or ROOT / ".mlcp" / "env-cache")


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory):
    from steps.local import stack

    os.environ[envs.CACHE_VAR] = str(ENV_CACHE)  # inherited by every `mlcp stack up` too
    home = tmp_path_factory.mktemp("mlcp-home")
    ports = {"mlflow": stack.free_port(), "s3": stack.free_port(), "triton": stack.free_port()}
    saved = dict(os.environ)
    # two Triton replicas on one repository: every deploy, promote and rollback of the CV
    # tests loads both (MLCP_TRITON_REPLICAS), inference goes to the first (MLCP_TRITON_URL)
    values = stack.up(home, ports=ports, bucket="mlcp-test", triton_replicas=2)
    os.environ.update(values)
    os.environ["MLCP_HOME"] = str(home)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ.pop("ARGO_WORKFLOW_NAME", None)
    os.environ.pop("ARGO_WORKFLOW_UID", None)
    try:
        yield {**values, "home": home}
    finally:
        dead = _dead_services(home)
        stack.down(home)
        os.environ.clear()
        os.environ.update(saved)
    # a session server that died while the tests ran fails the run with its log's last lines:
    # the tests that failed on it say only "not reachable"
    assert not dead, "\n\n".join(dead)


def _dead_services(home: Path) -> list[str]:
    from steps.local import stack

    return [
        f"the session's {row['service']} ({row['url']}) is {row['state']}; last lines of its "
        f"log:\n{stack._tail(stack.service_log(home, row['service']), 40)}"
        for row in stack.status(home)
        if row["state"] == "dead"
    ]


@pytest.fixture(scope="session")
def client(stack_env):
    from steps.records import tracking

    return tracking.client()


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_mlcp(*args: str, env: dict | None = None, timeout: float = 120) -> Result:
    """Run the real CLI in a new process, as Argo or a person would."""
    proc = subprocess.run(
        [sys.executable, "-m", "steps.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def mlcp(stack_env):
    return run_mlcp


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class ModelFactory:
    """Registers real model versions: each from a training run that logged a small file."""

    def __init__(self, client):
        self.client = client

    def create(self, versions: int = 1, *, pipeline: str = "test", prefix: str = "model") -> str:
        name = unique(prefix)
        self.client.create_registered_model(name, tags={"mlcp.pipeline": pipeline})
        for _ in range(versions):
            self.add_version(name, pipeline=pipeline)
        return name

    def add_version(self, name: str, *, pipeline: str = "test", lr: float = 0.1) -> str:
        import mlflow

        from steps.records import tracking

        with tracking.stage_run(
            pipeline,
            "train",
            name,
            tracking.run_name("tiny", {"lr": lr}),
            params={"lr": lr},
            system_metrics=False,
        ) as run:
            mlflow.log_text(f"weights of {name}", "model/weights.txt")
            mv = self.client.create_model_version(
                name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
            )
            self.client.set_tag(run.info.run_id, "mlcp.version", str(mv.version))
        return str(mv.version)

    def pass_gate(self, name: str, version: str, gate: str = "quality", value: float = 0.9):
        from steps.decisions import gates

        return gates.evaluate(
            gates.Gate(gate, "accuracy", ">=", 0.5),
            model=name,
            version=version,
            value=value,
            pipeline="test",
            stage="evaluate",
        )

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def aliases(self, name: str) -> dict[str, str]:
        return {a: str(v) for a, v in self.client.get_registered_model(name).aliases.items()}


@pytest.fixture
def models(client):
    return ModelFactory(client)


@pytest.fixture(scope="session")
def postgres_mlflow(stack_env):
    """A second MLflow server whose backend store is PostgreSQL, as in the chart, started by
    the stack's own code (`stack.up(..., backend_store="postgresql")`: the machine's
    PostgreSQL, initdb'd in its own stack folder). It shares the session's S3 endpoint (the
    environment is the session's but for ``MLFLOW_TRACKING_URI``). Where PostgreSQL is
    missing this fails with the stack's message, it does not skip. The folder is made under
    /tmp, not pytest's private one: as root the stack runs PostgreSQL as user ``postgres``,
    who must be able to enter it."""
    import shutil
    import tempfile

    from steps.local import stack

    home = Path(tempfile.mkdtemp(prefix="mlcp-pg-"))
    home.chmod(0o711)
    ports = {"mlflow": stack.free_port(), "postgres": stack.free_port()}
    started = time.monotonic()
    try:
        values = stack.up(
            home, ports=ports, services=["mlflow"], backend_store="postgresql", sync=False
        )
        print(f"MLflow on PostgreSQL ready in {time.monotonic() - started:.1f} s")
        yield {**values, "home": home}
    finally:
        stack.down(home)
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Backend:
    store: str  # sqlite or postgresql
    client: object
    models: ModelFactory


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_store(request, stack_env):
    """The test runs once against the session's MLflow (sqlite) and once against
    ``postgres_mlflow``: ``MLFLOW_TRACKING_URI`` (which `mlcp` processes inherit) and
    MLflow's global tracking URI point at it for the test's duration."""
    import mlflow

    from steps.records import tracking

    saved = os.environ["MLFLOW_TRACKING_URI"]
    if request.param == "postgresql":
        postgres = request.getfixturevalue("postgres_mlflow")
        os.environ["MLFLOW_TRACKING_URI"] = postgres["MLFLOW_TRACKING_URI"]
    try:
        client = tracking.client()
        yield Backend(request.param, client, ModelFactory(client))
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = saved
        mlflow.set_tracking_uri(saved)


# The LLM pipeline's fixtures live here so that the pipeline test and the templates'
# contract tests share one published base and one vLLM server per session.
@pytest.fixture(scope="session")
def llm_data(stack_env):
    from steps.llm import data as llmdata

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["MLCP_CACHE_DIR"] = str(stack_env["home"] / "cache")
    result = run_mlcp("data", "llm", timeout=300)
    assert result.code == 0, result.err[-3000:]
    published = json.loads(result.out.strip().splitlines()[-1])
    bucket = stack_env["MLCP_BUCKET"]
    assert published["data"] == f"s3://{bucket}/data/{llmdata.DEFAULT_KEY}"
    assert published["base_model"] == f"s3://{bucket}/data/{llmdata.BASE_KEY}"
    return published


@pytest.fixture(scope="session")
def vllm_server(stack_env, llm_data):
    """The stack's own vLLM service (``stack.up(services=["vllm"])``) started in the session's
    stack on a free port: vLLM's OpenAI-compatible server serving the project's base with
    runtime LoRA loading. Its environment is built once in ``ENV_CACHE`` and linked into the
    session's stack folder; the session's ``stack.down`` stops it."""
    from steps.local import stack
    from steps.serving import vllm

    home = stack_env["home"]
    started = time.monotonic()
    values = stack.up(home, ports={"vllm": stack.free_port()}, services=["vllm"])
    print(f"vLLM ready on {values['MLCP_VLLM_URL']} in {time.monotonic() - started:.1f} s")
    os.environ["MLCP_VLLM_URL"] = values["MLCP_VLLM_URL"]
    os.environ["MLCP_VLLM_ADAPTER_DIR"] = values["MLCP_VLLM_ADAPTER_DIR"]
    os.environ[vllm.API_KEY_VAR] = values[vllm.API_KEY_VAR]  # its /v1 routes need the key
    return vllm.VLLM(values["MLCP_VLLM_URL"])


@pytest.fixture(scope="session")
def router_stack(stack_env):
    """The stack's router (Envoy) started in the session's stack folder on a free port; the
    session's ``stack.down`` stops it. Defined here, once: a session fixture imported into two
    test modules is two fixtures, and the second would start the router again."""
    from steps.local import stack
    from steps.registry import router

    started = time.monotonic()
    values = stack.up(stack_env["home"], services=["router"], ports={"router": stack.free_port()})
    print(f"router ready on {values[router.URL_ENV]} in {time.monotonic() - started:.1f} s")
    for key in (router.URL_ENV, router.STATS_ENV, router.CONFIG_DIR_ENV):
        os.environ[key] = values[key]
    return values


# ------------------------------------------------------------------ two workers (pytest-xdist)
# `make test` runs the suite in two processes (`-n 2 --dist loadscope`). Each worker starts its
# own session stack (its own MLflow, S3 endpoint and tritonservers on free ports), so no test
# sees another's models, aliases or server restarts. Tests are sent to a worker by group, and
# a group runs whole on one worker, in collection order:
# - every test that needs the LLM data or vLLM: one vLLM per run (a CPU engine is the most
#   expensive server here), and the tests that restart it cannot hit another's requests;
# - every test that needs MLflow on PostgreSQL: one PostgreSQL per run;
# - every other test with the rest of its module, so a module's shared fixture (a champion
#   trained once, a model live once) is paid once.
# The groups reach xdist's scheduler through a file (the workers collect, the controller
# schedules): xdist's own `xdist_group` marker does nothing with this pytest (xdist 3.8 renames
# a private attribute that pytest 9.2 no longer reads). Without xdist nothing changes.
GROUP_FIXTURES = {
    "llm": ("llm_data", "vllm_server"),
    "postgresql": ("postgres_mlflow", "backend_store"),
}
GROUPS_FILE_VAR = "MLCP_TEST_GROUPS_FILE"  # set by the controller, written by the workers

# The fixtures that start or reach a server: a test that needs none of them runs in
# `make test-fast` (marker `stack`, deselected there with `-m "not stack"`).
SERVER_FIXTURES = (
    "stack_env",
    "postgres_mlflow",
    "vllm_server",
    "llm_data",
    "auth_stack",
    "router_stack",
    "mlserver",
)


def pytest_configure(config):
    config.addinivalue_line("markers", "stack: needs the session's servers (set by conftest)")
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        if getattr(config.option, "numprocesses", None):
            handle, path = tempfile.mkstemp(prefix="mlcp-test-groups-", suffix=".json")
            os.close(handle)
            os.environ[GROUPS_FILE_VAR] = path  # the workers inherit it


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Work units are the groups the workers wrote (see above), biggest first as listed."""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        groups: dict[str, str] = {}

        def _split_scope(self, nodeid: str) -> str:
            if nodeid not in self.groups:
                self.groups.update(json.loads(Path(os.environ[GROUPS_FILE_VAR]).read_text()))
            return self.groups[nodeid]

    return ByGroup(config, log)


def group_of(item) -> str:
    needs = set(item.fixturenames)
    found = (g for g, names in GROUP_FIXTURES.items() if set(names) & needs)
    return next(found, item.module.__name__.rpartition(".")[2])


def pytest_collection_modifyitems(config, items):
    groups = {}
    for item in items:
        if set(SERVER_FIXTURES) & set(item.fixturenames):
            item.add_marker(pytest.mark.stack)
        groups[item.nodeid] = group_of(item)
    path = os.environ.get(GROUPS_FILE_VAR)
    if path and hasattr(config, "workerinput"):
        # The scheduler hands out groups in this order (`--no-loadscope-reorder`): the LLM
        # group first, the longest by far (vLLM's start, two LLM chains), then the larger
        # groups before the smaller, so that neither worker is left with a long tail.
        sizes = Counter(groups.values())
        items.sort(key=lambda i: (groups[i.nodeid] != "llm", -sizes[groups[i.nodeid]]))
        staged = Path(f"{path}.{config.workerinput['workerid']}")
        staged.write_text(json.dumps(groups))
        staged.replace(path)  # both workers write the same groups; the last rename wins
