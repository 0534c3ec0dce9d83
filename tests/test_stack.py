"""The local stack: idempotent start, clear refusal of a taken port, env file, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from steps.base import settings
from steps.local import stack


def test_status_reports_all_services_running(stack_env, mlcp):
    result = mlcp("stack", "status", "--home", str(stack_env["home"]))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert any(line.startswith("mlflow") and "running" in line for line in lines)
    assert any(line.startswith("s3") and "running" in line for line in lines)
    assert any(
        line.startswith("triton") and "running" in line and stack_env["MLCP_TRITON_URL"] in line
        for line in lines
    )


def test_the_triton_environment_was_built_once_with_pinned_versions(stack_env):
    home = stack_env["home"]
    marker = json.loads((home / "envs" / "triton" / stack.TRITON_ENV_MARKER).read_text())
    assert marker["requirements"] == list(stack.TRITON_REQUIREMENTS)
    assert "nvidia-pytriton==0.7.0" in marker["installed"]
    assert any(line.startswith("numpy==1.") for line in marker["installed"])
    assert marker["python"] == "3.11"
    dist = home / "triton" / "dist"
    assert (dist / "bin" / "tritonserver").is_file()
    assert (dist / "backends" / "python" / "triton_python_backend_stub").is_file()
    assert (home / "logs" / "triton.log").is_file()


def test_up_again_is_idempotent_and_keeps_the_same_processes(stack_env, mlcp):
    home = stack_env["home"]
    before = {row["service"]: row["pid"] for row in stack.status(home)}
    result = mlcp("stack", "up", "--home", str(home))
    assert result.code == 0, result.err
    assert "mlflow already running" in result.err and "s3 already running" in result.err
    assert "triton already running" in result.err
    assert "building the triton environment" not in result.err
    assert {row["service"]: row["pid"] for row in stack.status(home)} == before
    # and the env file still names the same endpoints the tests use
    values = settings.read_env_file(home / "env")
    assert values["MLFLOW_TRACKING_URI"] == stack_env["MLFLOW_TRACKING_URI"]
    assert values["AWS_ENDPOINT_URL"] == stack_env["AWS_ENDPOINT_URL"]
    assert values["MLCP_BUCKET"] == "mlcp-test"
    assert values["MLCP_TRITON_URL"] == stack_env["MLCP_TRITON_URL"]
    assert values["MLCP_TRITON_REPOSITORY"] == str(home / "triton" / "models")


def test_moving_a_running_service_to_another_port_is_refused(stack_env, mlcp):
    result = mlcp(
        "stack", "up", "--home", str(stack_env["home"]), "--mlflow-port", str(stack.free_port())
    )
    assert result.code == 2
    assert "already runs on port" in result.err
    result = mlcp(
        "stack", "up", "--home", str(stack_env["home"]), "--triton-port", str(stack.free_port())
    )
    assert result.code == 2
    assert "triton already runs on port" in result.err


def test_taken_port_gets_a_clear_message_and_starts_nothing(tmp_path, mlcp):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        result = mlcp(
            "stack",
            "up",
            "--home",
            str(tmp_path),
            "--mlflow-port",
            str(taken),
            "--s3-port",
            str(stack.free_port()),
        )
    assert result.code == 2
    assert f"port {taken} on 127.0.0.1 is taken" in result.err
    assert not (tmp_path / "env").exists()
    assert all(row["state"] == "stopped" for row in stack.status(tmp_path))


def test_bad_port_value_is_bad_input(tmp_path, mlcp):
    result = mlcp("stack", "up", "--home", str(tmp_path), "--s3-port", "99999")
    assert result.code == 2
    assert "port out of range" in result.err


def test_a_second_stack_starts_writes_env_and_stops(tmp_path, mlcp):
    home = tmp_path / "second"
    ports = [stack.free_port(), stack.free_port()]
    up = mlcp(
        "stack",
        "up",
        "--home",
        str(home),
        "--mlflow-port",
        str(ports[0]),
        "--s3-port",
        str(ports[1]),
        "--bucket",
        "other",
        "--services",
        "mlflow,s3",
    )
    try:
        assert up.code == 0, up.err
        assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{ports[0]}" in up.out
        values = settings.read_env_file(home / "env")
        assert values["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{ports[1]}"
        assert values["MLCP_DATA_ROOT"] == "s3://other/data"
        # triton was left out: not started, not built, not in the env, not a fault
        assert "MLCP_TRITON_URL" not in values
        assert not (home / "envs").exists()
        status = mlcp("stack", "status", "--home", str(home))
        assert status.code == 0, status.out
        assert any(line.split()[:2] == ["triton", "stopped"] for line in status.out.splitlines())
        assert (home / "logs" / "mlflow.log").is_file()
        assert (home / "mlflow" / "mlflow.db").is_file()
        # a command run with MLCP_HOME pointing there finds the stack through the env file
        env = {"MLCP_HOME": str(home), "MLFLOW_TRACKING_URI": ""}
        history = mlcp("history", "--model-name", "nothing-here", env=env)
        assert history.code == 2 and "does not exist" in history.err
    finally:
        down = mlcp("stack", "down", "--home", str(home))
    assert down.code == 0, down.err
    assert "stopped mlflow" in down.err and "stopped s3" in down.err
    assert not (home / "env").exists()
    assert stack.port_free(ports[0]) and stack.port_free(ports[1])
    status = mlcp("stack", "status", "--home", str(home))
    assert status.code == 1 and "stopped" in status.out


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) with a socket listening on the port."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def extra_of(home):
    return json.loads((home / "stack.json").read_text())["triton"]["extra"]


def test_a_triton_only_stack_reuses_a_built_environment_and_stops(stack_env, tmp_path, mlcp):
    # given a stack folder whose triton environment is already built (the session's)
    home = tmp_path / "triton-only"
    (home / "envs").mkdir(parents=True)
    (home / "envs" / "triton").symlink_to(stack_env["home"] / "envs" / "triton")
    port = stack.free_port()
    # when only triton is started
    up = mlcp(
        "stack", "up", "--home", str(home), "--services", "triton", "--triton-port", str(port)
    )
    try:
        # then nothing is installed again and the env names triton only
        assert up.code == 0, up.err
        assert "already installed" in up.err and "pip install" not in up.err
        assert f"MLCP_TRITON_URL=http://127.0.0.1:{port}" in up.out
        values = settings.read_env_file(home / "env")
        assert values == {
            "MLCP_TRITON_URL": f"http://127.0.0.1:{port}",
            "MLCP_TRITON_REPOSITORY": str(home / "triton" / "models"),
            "MLCP_TRITON_GRPC_URL": f"127.0.0.1:{extra_of(home)['grpc_port']}",
            # the key its model-repository API asks for, kept readable by its owner only
            "MLCP_TRITON_CONTROL_KEY": (home / "triton" / "control-key").read_text().strip(),
        }
        assert (home / "triton" / "control-key").stat().st_mode & 0o777 == 0o600
        assert (home / "triton" / "models").is_dir()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=5) as r:
            assert r.status == 200
        # and its HTTP, gRPC and metrics ports listen on loopback only
        extra = json.loads((home / "stack.json").read_text())["triton"]["extra"]
        for listening in (port, extra["grpc_port"], extra["metrics_port"]):
            addresses = _listening_addresses(listening)
            assert addresses, f"nothing listens on {listening}"
            assert all(a.endswith("0100007F") for a in addresses), addresses
        status = mlcp("stack", "status", "--home", str(home))
        assert status.code == 0 and "mlflow   stopped" in status.out
        pid = next(r["pid"] for r in stack.status(home) if r["service"] == "triton")
    finally:
        down = mlcp("stack", "down", "--home", str(home))
    # when it is stopped, its process is gone and its port free
    assert down.code == 0 and "stopped triton" in down.err
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert stack.port_free(port)


def test_a_taken_triton_port_is_refused_before_anything_starts_or_is_built(tmp_path, mlcp):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        result = mlcp(
            "stack",
            "up",
            "--home",
            str(tmp_path),
            "--mlflow-port",
            str(stack.free_port()),
            "--s3-port",
            str(stack.free_port()),
            "--triton-port",
            str(taken),
        )
    assert result.code == 2
    assert f"port {taken} on 127.0.0.1 is taken by another program, so triton" in result.err
    assert "--triton-port" in result.err
    assert not (tmp_path / "envs").exists() and not (tmp_path / "env").exists()
    assert all(row["state"] == "stopped" for row in stack.status(tmp_path))


def test_unknown_services_are_bad_input(tmp_path, mlcp):
    result = mlcp("stack", "up", "--home", str(tmp_path), "--services", "mlflow,kafka")
    assert result.code == 2
    assert "unknown service(s) kafka" in result.err and "mlflow,s3,triton" in result.err


def test_vllm_joins_the_stack_serving_the_published_base(stack_env, vllm_server, llm_data):
    # given the session's stack, where the vllm_server fixture ran `stack.up(services=[vllm])`
    home = stack_env["home"]
    from steps.llm import data as llmdata

    rows = {row["service"]: row for row in stack.status(home)}
    # then vllm runs beside the other three and the env file names it and its adapter folder
    assert rows["vllm"]["state"] == "running" and rows["triton"]["state"] == "running"
    values = settings.read_env_file(home / "env")
    assert values["MLCP_VLLM_URL"] == rows["vllm"]["url"] == vllm_server.url
    assert values["MLCP_VLLM_ADAPTER_DIR"] == str(home / "vllm" / "adapters")
    assert values["MLFLOW_TRACKING_URI"] == stack_env["MLFLOW_TRACKING_URI"]
    # and it serves the base built locally, byte for byte the one `mlcp data llm` published
    served = [m["id"] for m in vllm_server.models()]  # with the stack's key: /v1 needs it
    assert llmdata.BASE_NAME in served
    local = home / "vllm" / "base" / llmdata.BASE_NAME
    published = llmdata.materialize(llm_data["base_model"]).folder

    def files(folder: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
        }

    assert "model.safetensors" in files(local)
    assert files(local) == files(published)
    # and a second `up` of vllm leaves the same process running
    again = stack.up(home, services=["vllm"])
    assert again["MLCP_VLLM_URL"] == vllm_server.url
    assert {r["service"]: r["pid"] for r in stack.status(home)}["vllm"] == rows["vllm"]["pid"]


def test_a_taken_vllm_port_is_refused_before_anything_is_built(tmp_path, mlcp):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        result = mlcp(
            "stack", "up", "--home", str(tmp_path), "--services", "vllm", "--vllm-port", str(taken)
        )
    assert result.code == 2
    assert f"port {taken} on 127.0.0.1 is taken by another program, so vllm" in result.err
    assert "--vllm-port" in result.err
    assert not (tmp_path / "envs").exists() and not (tmp_path / "vllm").exists()


# Records a run that read each data set through the project's lineage (steps/records/lineage.py):
# the digests the test later checks the bytes against.
RECORD_LINEAGE = """
import sys
from steps.records import lineage, tracking
with tracking.stage_run("test", "train", "keep", "keep-lineage", system_metrics=False):
    for uri in sys.argv[1:]:
        lineage.log(lineage.read(uri), name=uri.split("/")[-2], num_rows=1)
"""


def _recorded_data_sets(tracking_uri: str) -> dict[str, str]:
    """Every data set the lineage of that MLflow recorded: source URI -> digest."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = {}
    for run in client.search_runs(experiments, max_results=1000):
        for item in run.inputs.dataset_inputs:
            found[json.loads(item.dataset.source)["uri"]] = item.dataset.digest
    return found


def _read_back(recorded: dict[str, str]) -> dict[str, str]:
    from steps.records import lineage

    return {uri: lineage.read(uri).digest for uri in recorded}


def _publish_and_record(env: dict, seed: int) -> str:
    from .conftest import run_mlcp

    published = run_mlcp("data", "cv", "--seed", str(seed), env=env)
    assert published.code == 0, published.err
    uri = json.loads(published.out.strip().splitlines()[-1])["uri"]
    recorded = subprocess.run(
        [sys.executable, "-c", RECORD_LINEAGE, uri],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    return uri


@pytest.mark.stack  # a stack of its own: it kills its S3 endpoint
def test_data_sets_survive_down_and_up_and_a_killed_s3_endpoint(tmp_path, monkeypatch):
    # given a stack of its own (mlflow + s3) where `mlcp data cv` published a data set and a
    # run recorded, through lineage, the digest of what it read
    home = tmp_path / "keeps"
    ports = {"mlflow": stack.free_port(), "s3": stack.free_port()}
    values = stack.up(home, ports=ports, services=["mlflow", "s3"], bucket="keeps", sync=False)
    env = {**values, "MLCP_HOME": str(home)}
    for key in ("AWS_ENDPOINT_URL", *stack.LOCAL_CREDENTIALS):  # lineage.read's S3 client
        monkeypatch.setenv(key, values[key])
    try:
        first = _publish_and_record(env, seed=0)
        recorded = _recorded_data_sets(values["MLFLOW_TRACKING_URI"])
        assert first in recorded and _read_back(recorded) == recorded
        # when the whole stack goes down and comes up again
        stack.down(home)
        assert stack.port_free(ports["s3"])
        again = stack.up(home, ports=ports, services=["mlflow", "s3"], sync=False)
        assert again["MLCP_DATA_ROOT"] == "s3://keeps/data"  # the bucket the folder keeps
        # then every data set the lineage recorded reads back with its recorded digest
        assert _recorded_data_sets(values["MLFLOW_TRACKING_URI"]) == recorded
        assert _read_back(recorded) == recorded
        # and the bytes are files under the stack folder, not in a process's memory
        assert (home / "s3" / "keeps" / "data" / "cv" / "digits" / "newest.json").is_file()
        # when another data set is published and the S3 process is killed (SIGKILL)
        second = _publish_and_record(env, seed=1)
        recorded = _recorded_data_sets(values["MLFLOW_TRACKING_URI"])
        assert set(recorded) == {first, second}
        pid = next(r["pid"] for r in stack.status(home) if r["service"] == "s3")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while stack._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not stack._alive(pid)
        rows = {r["service"]: r for r in stack.status(home)}
        assert rows["s3"]["state"] == "dead"
        # and `up` starts it again (MLflow, still running, is left alone)
        stack.up(home, ports=ports, services=["mlflow", "s3"], sync=False)
        after = {r["service"]: r for r in stack.status(home)}
        assert after["s3"]["state"] == "running" and after["s3"]["pid"] != pid
        assert after["mlflow"]["pid"] == rows["mlflow"]["pid"]
        # then both data sets read back with the digests lineage recorded, and newest still
        # points at the last one published
        assert _read_back(recorded) == recorded
        newest = run_mlcp_json(env, "data", "cv", "--seed", "1")
        assert newest["uri"] == second and newest["digest"] == recorded[second]
    finally:
        stack.down(home)


def run_mlcp_json(env: dict, *args: str) -> dict:
    """Publishing a version again with the same bytes changes nothing: its pointer back."""
    from .conftest import run_mlcp

    result = run_mlcp(*args, env=env)
    assert result.code == 0, result.err
    return json.loads(result.out.strip().splitlines()[-1])


def test_mlflow_runs_without_a_job_runner(stack_env):
    # given the session's MLflow, started by the stack in a session of its own
    (row,) = [r for r in stack.status(stack_env["home"]) if r["service"] == "mlflow"]
    leader = int(row["pid"])
    # when every process of that session is listed with its command line
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) == leader:
                members.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile
    # then the server and its workers run, and no huey consumer (MLflow's job runner) does
    assert any("mlflow" in cmd and "server" in cmd for cmd in members), members
    assert not [cmd for cmd in members if "huey" in cmd], members


def test_a_pid_given_out_again_is_not_signalled_as_the_service(tmp_path):
    """A recorded service whose process exited and whose pid the kernel gave to another
    process (its own group leader, as every stack server is): stopping, restarting or
    `down` must leave that stranger alone, and `status` calls the service dead.

    The kernel's reuse is not forced here: a real process stands in for the stranger, and
    the record carries another start time, which is what a reused pid looks like."""
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        ticks = stack._start_ticks(stranger.pid)
        assert ticks and ticks > 1
        gone = stack.Service("s3", stack.free_port(), stranger.pid, ticks - 1)
        assert stack._reused(gone) and not stack._running(gone)
        # when the stack stops the recorded service (as `up` does before a restart)
        stack._kill(gone, grace=1)
        assert stranger.poll() is None, "the stranger on the reused pid was signalled"
        # when `down` and `status` read a record that names the pid
        home = tmp_path / "home"
        home.mkdir()
        stack._save_state(home, {"s3": gone})
        assert {r["service"]: r["state"] for r in stack.status(home)}["s3"] == "dead"
        assert stack.down(home) == [] and stranger.poll() is None
        # and the same record with the right start time does stop it
        stack._kill(stack.Service("s3", gone.port, stranger.pid, ticks), grace=5)
        assert stranger.wait(timeout=10) == -signal.SIGTERM
    finally:
        if stranger.poll() is None:
            stranger.kill()
            stranger.wait()
