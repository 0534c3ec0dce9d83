"""The local stack: real services on loopback, each in its own process, state under .mlcp/.

``up`` is idempotent (a healthy service is left running), refuses clearly when a port is
taken by something else, and writes every variable the steps need into ``.mlcp/env``.
Logs go to ``.mlcp/logs/<service>.log``. The S3 endpoint (moto's server) keeps its objects
in memory: ``down`` forgets them, and ``up`` creates the bucket again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from . import settings
from .errors import BadInput, MlcpError

DEFAULT_PORTS = {"mlflow": 5000, "s3": 9000}
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "mlcp-local",
    "AWS_SECRET_ACCESS_KEY": "mlcp-local-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
HOST = "127.0.0.1"


@dataclass
class Service:
    name: str
    port: int
    pid: int = 0

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


HEALTH = {"mlflow": "/health", "s3": "/moto-api/"}


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


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _start(name: str, port: int, home: Path, timeout: float) -> Service:
    if not port_free(port):
        raise BadInput(
            f"port {port} on {HOST} is taken by another program, so {name} cannot start there; "
            f"stop that program or choose another port (--{name}-port)"
        )
    log_path = home / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    (home / "mlflow").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **LOCAL_CREDENTIALS)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            _command(name, port, home),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=home,
            start_new_session=True,
        )
    service = Service(name, port, process.pid)
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
    s3 = services["s3"].url
    return {
        "MLFLOW_TRACKING_URI": services["mlflow"].url,
        "AWS_ENDPOINT_URL": s3,
        "MLFLOW_S3_ENDPOINT_URL": s3,
        **LOCAL_CREDENTIALS,
        "MLCP_BUCKET": bucket,
        "MLCP_DATA_ROOT": f"s3://{bucket}/data",
    }


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


def up(
    home: Path | None = None,
    *,
    ports: dict[str, int] | None = None,
    bucket: str | None = None,
    timeout: float = 120.0,
) -> dict[str, str]:
    """Start what is not running yet; return the environment written to ``<home>/env``.
    The bucket defaults to the one this stack was started with, else ``mlcp``."""
    home = (home or settings.stack_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if bucket is None:
        env_file = home / settings.ENV_FILE_NAME
        previous = settings.read_env_file(env_file) if env_file.is_file() else {}
        bucket = previous.get("MLCP_BUCKET", "mlcp")
    wanted = dict(DEFAULT_PORTS, **(ports or {}))
    for name, port in wanted.items():
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise BadInput(f"--{name}-port must be a port number, got {port!r}")
    state = _load_state(home)
    services: dict[str, Service] = {}
    for name in DEFAULT_PORTS:
        known = state.get(name)
        if known and healthy(known):
            if ports and name in ports and ports[name] != known.port:
                raise BadInput(
                    f"{name} already runs on port {known.port}; run `mlcp stack down` first "
                    f"to move it to port {ports[name]}"
                )
            _log(f"{name} already running on {known.url} (pid {known.pid})")
            services[name] = known
            continue
        if known:
            _kill(known)
        services[name] = _start(name, wanted[name], home, timeout)
        _save_state(home, {**state, **services})
    _ensure_bucket(services["s3"].url, bucket)
    values = env_for(services, bucket)
    path = _write_env(home, values)
    _log(f"environment written to {path}")
    return values


def down(home: Path | None = None) -> list[str]:
    home = (home or settings.stack_home()).resolve()
    stopped = []
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
    home = (home or settings.stack_home()).resolve()
    state = _load_state(home)
    rows = []
    for name in DEFAULT_PORTS:
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
