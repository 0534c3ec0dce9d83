"""The local stack: real services on loopback, each in its own process, state under .mlcp/.

Four services: ``mlflow`` (tracking server, sqlite + local artifacts), ``s3`` (moto's
S3-compatible server), ``triton`` (a real ``tritonserver``, explicit model control, model
repository ``.mlcp/triton/models``) and ``vllm`` (vLLM's OpenAI-compatible server on the CPU,
serving the LLM base with runtime LoRA loading; adapters under ``.mlcp/vllm/adapters``).
``up`` starts the first three unless ``services`` says otherwise: vLLM is only for the LLM
pipeline and costs a one-off environment build and a gigabyte of memory, so the CV demo does
not pay for it (``make demo-llm`` asks for it). ``up`` is idempotent (a healthy service is left
running), refuses clearly when a port is taken by something else, and writes every variable
the steps need into ``.mlcp/env``. Logs go to ``.mlcp/logs/<service>.log``. The S3 endpoint
keeps its objects in memory: ``down`` forgets them, and ``up`` creates the bucket again.

Triton runs from its own virtual environment, as it would run from its own image:
``.mlcp/envs/triton`` holds ``nvidia-pytriton`` (whose wheel ships the ``tritonserver``
binary and its python backend) and an onnxruntime for the python-backend models. ``up``
builds it once (a marker file records what was installed) and lays the server out under
``.mlcp/triton/dist`` with the python backend stub for that environment's Python. vLLM
runs from ``.mlcp/envs/vllm`` (``steps/serving/vllm.py``), serving the base of
``steps.llm.data.serving_base``: ``$MLCP_LLM_BASE_MODEL`` when set, else the project's tiny
base built locally (the same bytes ``mlcp data llm`` publishes), so it can start before any
data is published.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import settings
from .errors import BadInput, MlcpError
from .serving import envs

SERVICES = ("mlflow", "s3", "triton", "vllm")
DEFAULT_SERVICES = ("mlflow", "s3", "triton")
DEFAULT_PORTS = {"mlflow": 5000, "s3": 9000, "triton": 8000, "vllm": 8100}
# vLLM on two CPU cores needs tens of seconds to load and warm up even a tiny model.
VLLM_START_TIMEOUT = 420.0
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "mlcp-local",
    "AWS_SECRET_ACCESS_KEY": "mlcp-local-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
HOST = "127.0.0.1"

# The triton environment. nvidia-pytriton 0.7.0 ships tritonserver 2.51.0 and pins numpy<2;
# onnxruntime 1.30.0 runs with that numpy (the python-backend models use it).
TRITON_PYTHON = "3.11"
TRITON_REQUIREMENTS = ("nvidia-pytriton==0.7.0", "onnxruntime==1.30.0", "numpy==1.26.4")
TRITON_ENV_MARKER = "mlcp-installed.json"
TRITON_DIST_MARKER = "mlcp-dist.json"
TRITON_BUILD_TIMEOUT = 1200.0


@dataclass
class Service:
    name: str
    port: int
    pid: int = 0
    # triton: grpc_port, metrics_port, repository; vllm: base, served_name, adapter_dir
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def _log(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


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


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 500
    except Exception:
        return False


HEALTH = {
    "mlflow": "/health",
    "s3": "/moto-api/",
    "triton": "/v2/health/live",
    "vllm": "/health",
}


def healthy(service: Service) -> bool:
    return _alive(service.pid) and _http_ok(service.url + HEALTH[service.name])


def _command(name: str, port: int, home: Path) -> list[str]:
    if name == "mlflow":
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
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
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    raise BadInput(f"unknown service {name!r}")


def _triton_command(port: int, home: Path, extra: dict) -> list[str]:
    dist = _triton_dist(home)
    return [
        str(dist / "bin" / "tritonserver"),
        f"--model-repository={extra['repository']}",
        f"--backend-directory={dist / 'backends'}",
        "--model-control-mode=explicit",
        f"--http-address={HOST}",
        f"--http-port={port}",
        f"--grpc-address={HOST}",
        f"--grpc-port={extra['grpc_port']}",
        f"--metrics-address={HOST}",
        f"--metrics-port={extra['metrics_port']}",
        "--exit-timeout-secs=5",
        "--log-verbose=0",
    ]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _refuse_taken(name: str, port: int) -> None:
    if not port_free(port):
        raise BadInput(
            f"port {port} on {HOST} is taken by another program, so {name} cannot start there; "
            f"stop that program or choose another port (--{name}-port)"
        )


def _start(
    name: str, port: int, home: Path, timeout: float, triton: TritonEnv | None = None
) -> Service:
    _refuse_taken(name, port)
    log_path = home / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    extra: dict = {}
    if name == "triton":
        triton = triton or ensure_triton_env(home)
        extra = _triton_ports(port)
        extra["repository"] = str(triton_repository(home))
        triton_repository(home).mkdir(parents=True, exist_ok=True)
        command = _triton_command(port, home, extra)
        env = triton.process_env()
    elif name == "vllm":
        command, env, extra = _vllm_command(port, home)
        timeout = max(timeout, VLLM_START_TIMEOUT)
    else:
        (home / "mlflow").mkdir(parents=True, exist_ok=True)
        command = _command(name, port, home)
        env = dict(os.environ, **LOCAL_CREDENTIALS)
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=home,
            start_new_session=True,
        )
    service = Service(name, port, process.pid, extra)
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
    if not _alive(service.pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(service.pid, signal.SIGTERM)
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
        values["MLCP_TRITON_URL"] = services["triton"].url
        values["MLCP_TRITON_REPOSITORY"] = services["triton"].extra["repository"]
        # loads over gRPC leave the HTTP workers serving (steps/serving/triton.py)
        values["MLCP_TRITON_GRPC_URL"] = f"{HOST}:{services['triton'].extra['grpc_port']}"
    if "vllm" in services:
        values["MLCP_VLLM_URL"] = services["vllm"].url
        values["MLCP_VLLM_ADAPTER_DIR"] = services["vllm"].extra["adapter_dir"]
    return values


def _write_env(home: Path, values: dict[str, str]) -> Path:
    path = home / settings.ENV_FILE_NAME
    lines = ["# Written by `mlcp stack up`: the environment the steps need. Source it or let"]
    lines += ["# mlcp read it (variables already set in the environment win)."]
    lines += [f"export {key}={value}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


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


# ------------------------------------------------------------------------------ vllm


def vllm_adapter_dir(home: Path) -> Path:
    return home / "vllm" / "adapters"


def _vllm_command(port: int, home: Path) -> tuple[list[str], dict[str, str], dict]:
    """Build (once) vLLM's environment and the base it serves; its command, env and extra."""
    from .llm import data as llmdata
    from .serving import vllm

    vllm.ensure_env(home)
    base = llmdata.serving_base(home)
    vllm_adapter_dir(home).mkdir(parents=True, exist_ok=True)
    argv, env = vllm.server_command(home, port, base.folder, base.name)
    extra = {
        "base": str(base.folder),
        "served_name": base.name,
        "adapter_dir": str(vllm_adapter_dir(home)),
    }
    return argv, env, extra


# ------------------------------------------------------------------------------ triton


def triton_repository(home: Path) -> Path:
    return home / "triton" / "models"


def _triton_dist(home: Path) -> Path:
    return home / "triton" / "dist"


def _triton_venv(home: Path) -> Path:
    return home / "envs" / "triton"


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
    python = venv / "bin" / "python"
    marker = _read_json(venv / TRITON_ENV_MARKER)
    if marker.get("requirements") == list(TRITON_REQUIREMENTS) and python.exists():
        _log(f"triton environment {venv} already installed ({', '.join(TRITON_REQUIREMENTS)})")
    else:
        log_path = home / "logs" / "triton-env.log"
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
    unknown = [n for n in names if n not in SERVICES]
    if unknown or not names:
        raise BadInput(
            f"unknown service(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SERVICES)}"
        )
    return [n for n in SERVICES if n in names]


def up(
    home: Path | None = None,
    *,
    ports: dict[str, int] | None = None,
    bucket: str | None = None,
    timeout: float = 120.0,
    services: Sequence[str] | None = None,
) -> dict[str, str]:
    """Start the chosen services (default: mlflow, s3, triton) that are not running yet; return the
    environment written to ``<home>/env``, which names every service of the stack that runs.
    The bucket defaults to the one this stack was started with, else ``mlcp``."""
    home = (home or settings.stack_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    chosen = check_services(services)
    if bucket is None:
        env_file = home / settings.ENV_FILE_NAME
        previous = settings.read_env_file(env_file) if env_file.is_file() else {}
        bucket = previous.get("MLCP_BUCKET", "mlcp")
    for name, port in (ports or {}).items():
        if name not in DEFAULT_PORTS:
            raise BadInput(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise BadInput(f"--{name}-port must be a port number, got {port!r}")
    wanted = dict(DEFAULT_PORTS, **(ports or {}))
    with _locked(home):
        state = _load_state(home)
        running: dict[str, Service] = {}
        for name in SERVICES:
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
        for name in to_start:
            if state.get(name):  # dead or unhealthy: make sure it is gone
                _kill(state.pop(name))
                _save_state(home, state)
        for name in to_start:  # refuse before starting (or building) anything
            _refuse_taken(name, wanted[name])
        triton = ensure_triton_env(home) if "triton" in to_start else None
        for name in to_start:
            running[name] = _start(name, wanted[name], home, timeout, triton)
            state[name] = running[name]
            _save_state(home, state)
        if "s3" in running:
            _ensure_bucket(running["s3"].url, bucket)
        values = env_for(running, bucket)
        path = _write_env(home, values)
    _log(f"environment written to {path}")
    return values


def down(home: Path | None = None) -> list[str]:
    home = (home or settings.stack_home()).resolve()
    stopped = []
    if not home.is_dir():
        _log("nothing was running")
        return stopped
    with _locked(home):
        for name, service in _load_state(home).items():
            if _alive(service.pid):
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
    for name in SERVICES:
        service = state.get(name)
        if service is None:
            rows.append({"service": name, "state": "stopped", "url": "", "pid": ""})
            continue
        ok = healthy(service)
        rows.append(
            {
                "service": name,
                "state": "running" if ok else ("unhealthy" if _alive(service.pid) else "dead"),
                "url": service.url,
                "pid": service.pid,
            }
        )
    return rows
