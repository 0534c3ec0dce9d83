"""The tabular pipeline's serving back end (``mlcp.serving=mlserver``) and the MLServer the
local stack starts (``mlcp stack up --services mlflow,s3,mlserver``).

Registered as entry points (pyproject.toml): ``mlserver`` in ``mlcp.serving`` (what promote,
rollback, ``serving check|sync`` and ``audit`` call) and in ``mlcp.services`` (what the stack
starts). :meth:`MLServerBackend.load_live` copies the version's model folder (recorded by
``mlcp tabular deploy`` as the version tag ``mlcp.mlserver.model``) into the slot, pins it
and loads it on every replica; a failure restores what the slot served before.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlcp import BadInput, Volume, contract, download, envs

from . import MODEL_DIR_TAG, SERVING, server


class MLServerBackend:
    name = SERVING
    # The repository is a folder every replica and the steps share ($MLCP_MLSERVER_REPOSITORY):
    # in a cluster this claim (the chart's mlserver.repository), mounted where the chart's
    # MLServer pods mount it.
    volumes: tuple[Volume, ...] = (
        Volume(name="mlserver-models", claim="mlcp-mlserver-models", mount_path="/mlserver-models"),
    )

    def load_live(self, client, model: str, version: str, slot: str | None = None) -> None:
        version = str(version)
        slot = slot or contract.live_slot(model)
        root = server.repository()
        if all(s.version == version and not s.error for s in server.served(slot)):
            if server.pinned(root, slot) != version:
                server.pin(root, slot, version)
            return
        if (root / slot / version / "MLmodel").is_file():
            server.switch(slot, version, None)
            return
        uri = client.get_model_version(model, version).tags.get(MODEL_DIR_TAG)
        if not uri:
            raise BadInput(
                f"{model} {contract.show_version(version)} was never deployed (no model folder "
                "recorded): run `mlcp tabular deploy` on it before it can go live"
            )
        with tempfile.TemporaryDirectory() as tmp:
            server.switch(slot, version, Path(download(client, uri, tmp)))

    def served(self, model: str, slot: str):
        return server.served(slot)

    def switch(self, model: str, slot: str, version: str, smoke=None) -> None:
        server.switch(slot, version, None, smoke)


class MLServerService:
    """MLServer as a service of the local stack: its venv, its settings, one process."""

    name = SERVING
    default_port = 8200
    health = "/v2/health/ready"
    start_timeout = float(server.BUILD_TIMEOUT)

    def command(self, port: int, home) -> tuple[list[str], dict[str, str], dict]:
        import socket

        from mlcp import MlcpError

        venv = server.ensure_env(Path(home))
        repository = Path(home) / "mlserver" / "models"
        ports = []
        for _ in range(2):  # its gRPC and metrics ports: free ones
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                ports.append(sock.getsockname()[1])
        if not (venv / "bin" / "mlserver").exists():
            raise MlcpError(f"{venv} has no mlserver program")
        server.write_settings(repository, port, *ports)
        env = envs.venv_process_env(venv)
        argv = [str(venv / "bin" / "mlserver"), "start", str(repository)]
        return argv, env, {"repository": str(repository), "grpc_port": ports[0]}

    def env(self, url: str, extra: dict) -> dict[str, str]:
        return {server.URL_VAR: url, server.REPOSITORY_VAR: extra["repository"]}


MLSERVER = MLServerBackend()
SERVICE = MLServerService()
