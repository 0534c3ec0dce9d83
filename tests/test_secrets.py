"""Secrets as files (steps/base/secrets.py): each secret setting the steps and the servers read
comes from its variable, else from the file ``NAME_FILE`` names, as the chart mounts them;
no server, nothing faked."""

from __future__ import annotations

import pytest

from steps.base import secrets
from steps.base.errors import BadInput, MlcpError
from steps.local import mlflow_auth
from steps.serving import triton, vllm, vllm_launch


def test_a_setting_comes_from_its_variable_else_its_file(monkeypatch, tmp_path):
    name = "MLCP_JUDGE_API_KEY"  # a declared secret (steps/base/environment.py)
    key_file = tmp_path / name
    key_file.write_text("fr0m-the-file\n")
    monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(secrets.file_variable(name), raising=False)
    assert secrets.read(name) is None  # neither
    monkeypatch.setenv(secrets.file_variable(name), str(key_file))
    assert secrets.read(name) == "fr0m-the-file"  # the file, its newline left out
    monkeypatch.setenv(name, "from-the-variable")
    assert secrets.read(name) == "from-the-variable"  # the variable wins
    monkeypatch.delenv(name)
    # a Secret without that key mounts no file: the setting is not given
    monkeypatch.setenv(secrets.file_variable(name), str(tmp_path / "absent"))
    assert secrets.read(name) is None
    # a file that is there but cannot be read is an error naming the variable and the path
    monkeypatch.setenv(secrets.file_variable(name), str(tmp_path))  # a folder
    with pytest.raises(MlcpError, match=f"cannot read {name} from {tmp_path}"):
        secrets.read(name)


def test_the_control_keys_are_read_from_their_files(monkeypatch, tmp_path):
    for name, read in (
        (triton.CONTROL_KEY_ENV, triton.control_key),
        (vllm.API_KEY_VAR, vllm.api_key),
        (vllm_launch.API_KEY_ENV, vllm_launch.api_key),
    ):
        path = tmp_path / name
        path.write_text(f"key-of-{name}\n")
        monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv(name + "_FILE", str(path))
        assert read() == f"key-of-{name}", name
        path.unlink()
        assert read() is None, name
    # the templates point every step secret at a file of the mounted credentials Secret
    assert vllm.API_KEY_VAR in secrets.STEP_SECRETS
    assert triton.CONTROL_KEY_ENV in secrets.STEP_SECRETS
    assert vllm_launch.API_KEY_FILE_ENV == secrets.file_variable(vllm_launch.API_KEY_ENV)


def test_the_users_jobs_credentials_come_from_files_and_the_mlflow_credentials_file(
    monkeypatch, tmp_path
):
    for name in (*mlflow_auth.ADMIN_ENV, *mlflow_auth.PIPELINE_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in zip(mlflow_auth.ADMIN_ENV, ("admin", "admin-password-1"), strict=True):
        (tmp_path / name).write_text(value)
        monkeypatch.setenv(secrets.file_variable(name), str(tmp_path / name))
    assert mlflow_auth.from_env(mlflow_auth.ADMIN_ENV, "admin") == mlflow_auth.Credentials(
        "admin", "admin-password-1"
    )
    # the pipeline user: MLflow's credentials file under HOME, as MLflow's client reads it
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = pipe\nmlflow_tracking_password = pipe-password\n"
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    assert mlflow_auth.from_env(mlflow_auth.PIPELINE_ENV, "pipeline") == (
        mlflow_auth.Credentials("pipe", "pipe-password")
    )
    (tmp_path / mlflow_auth.ADMIN_ENV[1]).unlink()
    with pytest.raises(BadInput, match="MLFLOW_AUTH_ADMIN_PASSWORD \\(or the file"):
        mlflow_auth.from_env(mlflow_auth.ADMIN_ENV, "admin")
