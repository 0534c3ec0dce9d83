"""MLServer, the MLflow runtime KServe uses: its environment, its model repository and a
client of its V2 and repository APIs.

- **Environment**: ``mlserver`` and ``mlserver-mlflow`` (pinned, :data:`REQUIREMENTS`) in
  their own virtual environment ``<stack>/envs/mlserver``, built once (shared between stack
  folders through ``$MLCP_ENV_CACHE``: ``mlcp.envs``), as tritonserver's and vLLM's are.
- **Settings**: ``"parallel_workers": 0``. With MLServer's default inference pool every
  worker dies at start ("There is no current event loop in thread 'MainThread'") and the
  model never loads; without the pool the main process serves.
- **Repository** (``$MLCP_MLSERVER_REPOSITORY``): one folder per slot, ``<slot>/``, holding
  the model folder of each version written there (``<slot>/<version>/``) and the slot's
  ``model-settings.json``, which names the version the slot serves: the desired state. A
  restarted MLServer loads every slot at that version with nobody acting.
- **Replicas** (``$MLCP_MLSERVER_URLS``, comma-separated; else ``$MLCP_MLSERVER_URL``): each
  reads the same repository; a switch loads on every one. A name that resolves to several
  addresses (the chart's headless Service) stands for each of them.
- **Control API**: MLServer has no key for its repository API (load, unload): anyone who
  reaches its port can switch a slot. The local stack binds it to 127.0.0.1 only; in a
  cluster a NetworkPolicy must admit only the step pods to it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from mlcp import MlcpError, Served, each_address, envs, say

REQUIREMENTS = (
    "mlserver==1.7.1",
    "mlserver-mlflow==1.7.1",
    "mlflow==3.17.2",  # the version that logged the models
    "scikit-learn==1.9.1",  # the version that trained them
)
PYTHON = "3.11"
NAME = "mlserver"
MARKER = "mlcp-installed.json"
BUILD_TIMEOUT = 1200.0
SETTINGS = "model-settings.json"
RUNTIME = "mlserver_mlflow.MLflowRuntime"
URL_VAR, URLS_VAR, REPOSITORY_VAR = (
    "MLCP_MLSERVER_URL",
    "MLCP_MLSERVER_URLS",
    "MLCP_MLSERVER_REPOSITORY",
)
LOAD_TIMEOUT = 120.0

_say = say("mlserver")


# ------------------------------------------------------------------------ environment


def ensure_env(home: Path) -> Path:
    """The MLServer venv of the stack folder ``home`` (``home/envs/mlserver``), built once."""
    venv = home / "envs" / NAME
    shared = envs.shared_dir(NAME, REQUIREMENTS)
    target = shared or venv
    with envs.build_lock(target.parent, NAME):
        if not (target / MARKER).is_file():
            if target.exists():
                shutil.rmtree(target)
            log = home / "logs" / "mlserver-build.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            python = envs.python_for(PYTHON, "MLServer")
            envs.run_step([python, "-m", "venv", str(target)], log, "venv", 120, _say)
            pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet"]
            envs.run_step([*pip, *REQUIREMENTS], log, "installing MLServer", BUILD_TIMEOUT, _say)
            (target / MARKER).write_text(json.dumps({"requirements": list(REQUIREMENTS)}))
    if shared is not None:
        envs.link(venv, shared)
    return venv


def write_settings(repository: Path, http_port: int, grpc_port: int, metrics_port: int) -> None:
    """The server's ``settings.json``: local-only, no inference pool (see the module)."""
    repository.mkdir(parents=True, exist_ok=True)
    settings = {
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "load_models_at_startup": True,
    }
    (repository / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")


# ------------------------------------------------------------------------ repository


def repository() -> Path:
    found = os.environ.get(REPOSITORY_VAR)
    if not found:
        raise MlcpError(f"{REPOSITORY_VAR} is not set: run `mlcp stack up --services ...,mlserver`")
    return Path(found)


def pinned(root: Path, slot: str) -> str | None:
    """The version the slot's settings name (its desired state), or None."""
    path = root / slot / SETTINGS
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("parameters", {}).get("version")


def pin(root: Path, slot: str, version: str) -> None:
    """Name ``version`` in the slot's settings (written whole, then renamed into place)."""
    settings = {
        "name": slot,
        "implementation": RUNTIME,
        "parameters": {"uri": f"./{version}", "version": str(version)},
    }
    path = root / slot / SETTINGS
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(settings, indent=2) + "\n")
    partial.replace(path)


def place(root: Path, slot: str, version: str, model_dir: Path) -> Path:
    """Copy a version's MLflow model folder into the slot (kept while others are pinned)."""
    target = root / slot / str(version)
    if not (target / "MLmodel").is_file():
        partial = target.with_name(f".{version}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(model_dir, partial)
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    return target


# ------------------------------------------------------------------------ client


class MLServer:
    """One replica's V2 and repository APIs."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise MlcpError(f"MLServer {self.url}{path}: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise MlcpError(f"MLServer {self.url} cannot be reached: {exc}") from None

    def require_live(self) -> None:
        self._call("GET", "/v2/health/live")

    def index(self) -> dict[str, tuple[str, str]]:
        """Every model the replica knows: name -> (version, state)."""
        return {
            entry["name"]: (str(entry.get("version") or ""), entry.get("state", ""))
            for entry in self._call("POST", "/v2/repository/index", {})
        }

    def served(self, slot: str) -> str | None:
        version, state = self.index().get(slot, (None, None))
        return version if state == "READY" else None

    def load(self, slot: str) -> None:
        self._call("POST", f"/v2/repository/models/{slot}/load", timeout=LOAD_TIMEOUT)

    def unload(self, slot: str) -> None:
        self._call("POST", f"/v2/repository/models/{slot}/unload")

    def infer(self, slot: str, body: dict) -> tuple[list, str]:
        """The predictions and the version that answered."""
        answer = self._call("POST", f"/v2/models/{slot}/infer", body)
        return answer["outputs"][0]["data"], str(answer.get("model_version"))


def urls() -> list[str]:
    found = os.environ.get(URLS_VAR) or os.environ.get(URL_VAR)
    if not found:
        raise MlcpError(f"{URL_VAR} is not set: run `mlcp stack up --services ...,mlserver`")
    listed = [u.strip().rstrip("/") for u in found.split(",") if u.strip()]
    # a headless Service's name (the chart's MLCP_MLSERVER_URLS) stands for every replica
    return list(dict.fromkeys(u for entry in listed for u in each_address(entry)))


def fleet() -> list[MLServer]:
    return [MLServer(u) for u in urls()]


def served(slot: str) -> list[Served]:
    found = []
    for replica in fleet():
        try:
            found.append(Served(replica.url, replica.served(slot)))
        except MlcpError as exc:
            found.append(Served(replica.url, None, str(exc)))
    return found


def switch(slot: str, version: str, model_dir: Path | None, smoke=None) -> None:
    """Make ``slot`` serve ``version`` on every replica: place its folder (when given), pin
    it, load it everywhere and run ``smoke(replica)``. On any failure the pin and every
    replica go back to the version pinned before, and the first error is raised."""
    root = repository()
    version = str(version)
    (root / slot).mkdir(parents=True, exist_ok=True)
    before = pinned(root, slot)
    if model_dir is not None:
        place(root, slot, version, model_dir)
    if not (root / slot / version / "MLmodel").is_file():
        raise MlcpError(f"{root / slot / version} holds no model: deploy the version first")
    replicas = fleet()
    try:
        pin(root, slot, version)
        for replica in replicas:
            replica.load(slot)
            started = time.monotonic()
            while replica.served(slot) != version:
                if time.monotonic() - started > LOAD_TIMEOUT:
                    raise MlcpError(f"{replica.url} did not serve {slot} v{version} in time")
                time.sleep(0.2)
            if smoke is not None:
                smoke(replica)
    except Exception:
        if before and before != version:
            _say(f"restoring {slot} to v{before}")
            pin(root, slot, before)
            for replica in replicas:
                try:
                    replica.load(slot)
                except MlcpError as exc:  # report the first failure, not this one
                    _say(f"could not restore {slot} on {replica.url}: {exc}")
        elif before is None:  # nothing was served there: nothing is
            (root / slot / SETTINGS).unlink(missing_ok=True)
            for replica in replicas:
                try:
                    replica.unload(slot)
                except MlcpError:
                    pass
        raise
    on = f" on {len(replicas)} replicas" if len(replicas) > 1 else ""
    _say(f"{slot} serves v{version}{on}")
