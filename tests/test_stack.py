"""The local stack: idempotent start, clear refusal of a taken port, env file, stop."""

from __future__ import annotations

import socket

from steps import settings, stack


def test_status_reports_both_services_running(stack_env, mlcp):
    result = mlcp("stack", "status", "--home", str(stack_env["home"]))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert any(line.startswith("mlflow") and "running" in line for line in lines)
    assert any(line.startswith("s3") and "running" in line for line in lines)


def test_up_again_is_idempotent_and_keeps_the_same_processes(stack_env, mlcp):
    home = stack_env["home"]
    before = {row["service"]: row["pid"] for row in stack.status(home)}
    result = mlcp("stack", "up", "--home", str(home))
    assert result.code == 0, result.err
    assert "mlflow already running" in result.err and "s3 already running" in result.err
    assert {row["service"]: row["pid"] for row in stack.status(home)} == before
    # and the env file still names the same endpoints the tests use
    values = settings.read_env_file(home / "env")
    assert values["MLFLOW_TRACKING_URI"] == stack_env["MLFLOW_TRACKING_URI"]
    assert values["AWS_ENDPOINT_URL"] == stack_env["AWS_ENDPOINT_URL"]
    assert values["MLCP_BUCKET"] == "mlcp-test"


def test_moving_a_running_service_to_another_port_is_refused(stack_env, mlcp):
    result = mlcp(
        "stack", "up", "--home", str(stack_env["home"]), "--mlflow-port", str(stack.free_port())
    )
    assert result.code == 2
    assert "already runs on port" in result.err


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
    )
    try:
        assert up.code == 0, up.err
        assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{ports[0]}" in up.out
        values = settings.read_env_file(home / "env")
        assert values["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{ports[1]}"
        assert values["MLCP_DATA_ROOT"] == "s3://other/data"
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
