"""MLflow's backend stores: promote killed in the middle of a move, on sqlite and on
PostgreSQL (the ``backend_store`` fixture runs each test on both), and how the stack finds
PostgreSQL and keeps a folder's store.

The crash point comes from a test hook (``settings.PAUSE_AFTER_RECORD_VARIABLE``): the
promote process sleeps once its move records are open and before any alias is written, and
the test kills it there with SIGKILL. Nothing is mocked: the servers are real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from steps.base import settings
from steps.base.errors import BadInput
from steps.local import stack
from steps.registry import moves

from .conftest import ROOT, run_mlcp


def _promote(name: str, source: str) -> list[str]:
    """The command line of a promotion of ``name@source`` to live, in its own process."""
    args = f"promote --model-name {name} --source-alias {source} --target-alias live"
    return [sys.executable, "-m", "steps.cli", *args.split()]


def _wait_for_open_record(client, name: str, proc, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        running = [r for r in moves.history(client, name, "live") if r.status == "RUNNING"]
        if running:
            return running
        time.sleep(0.3)
    raise AssertionError(f"no RUNNING record of {name} appeared in {timeout:.0f} s")


def test_promote_killed_mid_move_leaves_a_known_alias_an_open_record_and_no_lock(
    backend_store,
):
    models, client = backend_store.models, backend_store.client
    # given v1 live through a recorded promotion, and v2 as the next candidate
    name = models.create(2)
    models.set_alias(name, "cand-1", "1")
    models.set_alias(name, "cand-2", "2")
    first = run_mlcp(*_promote(name, "cand-1")[3:])
    assert first.code == 0, first.err
    # when a promotion of v2 is killed (SIGKILL) once its records are open
    started = time.monotonic()
    proc = subprocess.Popen(
        _promote(name, "cand-2"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, settings.PAUSE_AFTER_RECORD_VARIABLE: "120"},
    )
    try:
        open_records = _wait_for_open_record(client, name, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_after = time.monotonic() - started
    # then live names the old or the new version, never anything else (here: the old, since
    # it died before writing any alias)
    aliases = models.aliases(name)
    assert aliases["live"] in {"1", "2"}
    assert aliases["live"] == "1" and "previous" not in aliases
    # and the move's record stays RUNNING, shown by `mlcp history` as unconfirmed
    assert [r.to_version for r in open_records if r.alias == "live"] == ["2"]
    history = run_mlcp("history", "--model-name", name)
    assert history.code == 0, history.err
    unconfirmed = [line for line in history.out.splitlines() if "unconfirmed" in line]
    assert any("live" in line and "running" in line for line in unconfirmed), history.out
    # and the model's lock died with the process: the same promotion, run again, succeeds at
    # once (far below the lock's wait) and converges
    rerun_started = time.monotonic()
    again = run_mlcp(*_promote(name, "cand-2")[3:])
    rerun_s = time.monotonic() - rerun_started
    assert again.code == 0, again.err
    assert rerun_s < moves.LOCK_TIMEOUT_S / 4
    assert models.aliases(name) == {**aliases, "live": "2", "previous": "1"}
    confirmed = [r for r in moves.history(client, name, "live") if r.status == "FINISHED"]
    assert [(r.from_version, r.to_version) for r in confirmed] == [(None, "1"), ("1", "2")]
    print(f"[{backend_store.store}] killed after {killed_after:.1f} s, rerun took {rerun_s:.1f} s")


def test_the_postgresql_stack_runs_mlflow_on_the_machines_postgresql(postgres_mlflow):
    # given the stack the fixture started with stack.up(backend_store="postgresql")
    home = postgres_mlflow["home"]
    rows = {r["service"]: r for r in stack.status(home)}
    assert rows["postgres"]["state"] == "running" and rows["mlflow"]["state"] == "running"
    assert rows["postgres"]["url"].startswith("postgresql://127.0.0.1:")
    # then MLflow's store is that server, through the psycopg2 driver
    assert stack.backend_store_of(home) == "postgresql"
    port = rows["postgres"]["url"].rsplit(":", 1)[1]
    assert stack.backend_store_uri(home) == f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", dbname="mlflow") as db:
        with db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM registered_models")
            assert cursor.fetchone()[0] >= 0  # MLflow's own tables live there
    # and the server runs from the stack's folder as a user PostgreSQL accepts (not root)
    assert os.stat(f"/proc/{rows['postgres']['pid']}").st_uid != 0
    assert (home / "postgres" / "data" / "PG_VERSION").is_file()
    assert (home / "logs" / "postgres.log").is_file()
    # and switching that folder to sqlite is refused, naming the store it keeps
    with pytest.raises(BadInput, match="keeps MLflow's data in postgresql"):
        stack.up(home, services=["mlflow"], backend_store="sqlite", sync=False)


def test_no_postgresql_anywhere_is_a_clear_message(monkeypatch, tmp_path):
    # given a machine where neither PATH, pg_config nor the usual folders hold PostgreSQL
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BadInput) as refused:
        stack.pg_bindir(globs=(str(tmp_path / "postgresql" / "*" / "bin"),))
    message = str(refused.value)
    # then the message says what is missing, where it looked, and what to install
    assert "initdb, postgres" in message and "not on PATH" in message
    assert "pg_config --bindir" in message and str(tmp_path / "postgresql") in message
    assert "apt-get install postgresql" in message


def test_the_bin_folder_is_found_as_a_user_machine_has_it(monkeypatch, tmp_path):
    # PATH first, then pg_config --bindir, then the newest versioned folder
    for version in ("9", "15", "16"):
        folder = tmp_path / "postgresql" / version / "bin"
        folder.mkdir(parents=True)
        for program in ("initdb", "postgres"):
            (folder / program).write_text("#!/bin/sh\n")
            (folder / program).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    pattern = (str(tmp_path / "postgresql" / "*" / "bin"),)
    assert stack.pg_bindir(globs=pattern) == tmp_path / "postgresql" / "16" / "bin"
    monkeypatch.setenv("PATH", str(tmp_path / "postgresql" / "9" / "bin"))
    assert stack.pg_bindir(globs=pattern) == tmp_path / "postgresql" / "9" / "bin"
    # and on this machine image, PostgreSQL 15 is there
    monkeypatch.undo()
    assert (stack.pg_bindir() / "initdb").is_file()


def test_an_unknown_backend_store_is_bad_input(tmp_path):
    result = run_mlcp("stack", "up", "--home", str(tmp_path), "--backend-store", "mysql")
    assert result.code == 2
    assert "unknown backend store 'mysql'" in result.err and "sqlite,postgresql" in result.err
    with pytest.raises(BadInput, match="unknown backend store"):
        stack.choose_backend_store(tmp_path, "oracle")
    # and an empty folder takes what is asked, else sqlite
    assert stack.choose_backend_store(tmp_path, None) == "sqlite"
    assert stack.choose_backend_store(tmp_path, "postgresql") == "postgresql"


def test_a_sqlite_folder_is_not_switched_to_postgresql(tmp_path):
    # given a stack folder whose MLflow kept its runs in sqlite
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "mlflow.db").write_bytes(b"")
    # then asking it for PostgreSQL exits 2, names the store it holds, and starts nothing
    result = run_mlcp(
        "stack",
        "up",
        "--home",
        str(tmp_path),
        "--services",
        "mlflow",
        "--backend-store",
        "postgresql",
        "--mlflow-port",
        str(stack.free_port()),
    )
    assert result.code == 2
    assert "keeps MLflow's data in sqlite" in result.err and "mlflow.db" in result.err
    assert not (tmp_path / "postgres").exists()
    assert stack.choose_backend_store(tmp_path, None) == "sqlite"
