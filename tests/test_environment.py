"""The environment variables the steps read: declared once, typed, in steps/base/environment.py,
and read nowhere else (writing variables for a child process is not reading)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from steps.base import environment
from steps.base.environment import VARIABLES, Variable
from steps.base.errors import BadInput, MlcpError

ROOT = Path(__file__).resolve().parents[1]
# Modules that may read the environment themselves: the declarations, and the launcher that
# runs inside vLLM's own environment, where the steps' package is not installed.
READERS = ("steps/base/environment.py", "steps/serving/vllm_launch.py")


def _is_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def environment_reads(root: Path) -> list[str]:
    """``path:line`` of every read of the environment under ``root/steps`` outside READERS:
    ``os.environ.get``/``[...]``/``in os.environ``, ``os.getenv``. Writes (``os.environ[k] =``,
    ``setdefault``) and copies for a child process (``dict(os.environ)``) are not reads."""
    found = []
    for path in sorted((root / "steps").rglob("*.py")):
        name = path.relative_to(root).as_posix()
        if name in READERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), name)):
            read = (
                (isinstance(node, ast.Attribute) and node.attr == "get" and _is_environ(node.value))
                or (
                    isinstance(node, ast.Subscript)
                    and _is_environ(node.value)
                    and isinstance(node.ctx, ast.Load)
                )
                or (
                    isinstance(node, ast.Compare)
                    and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
                    and any(_is_environ(c) for c in node.comparators)
                )
                or (
                    isinstance(node, ast.Attribute)
                    and node.attr == "getenv"
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "os"
                )
            )
            if read:
                found.append(f"{name}:{node.lineno}")
    return sorted(set(found))


def test_no_module_under_steps_reads_the_environment_itself():
    # given every module under steps/ / then none reads os.environ but the declarations
    assert environment_reads(ROOT) == []


def test_the_check_finds_each_kind_of_read_and_passes_writes(tmp_path):
    # given a tree with each kind of read, and the writes a step may do
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "leaky.py").write_text(
        "import os\n"
        "a = os.environ.get('A')\n"
        "b = os.environ['B']\n"
        "c = 'C' in os.environ\n"
        "d = os.getenv('D')\n"
        "os.environ['E'] = '1'\n"
        "os.environ.setdefault('F', '1')\n"
        "child = dict(os.environ, G='1')\n"
    )
    # then the four reads are found, and the writes and the child's copy are not
    assert environment_reads(tmp_path) == [
        "steps/leaky.py:2",
        "steps/leaky.py:3",
        "steps/leaky.py:4",
        "steps/leaky.py:5",
    ]


def test_get_parses_the_type_and_falls_back_to_the_default(monkeypatch):
    # given the retry count (an int, default 7) and the insecure-TLS switch (a bool)
    retries = environment.MLFLOW_HTTP_REQUEST_MAX_RETRIES
    insecure = environment.MLFLOW_TRACKING_INSECURE_TLS
    # when unset or empty: the default, and not set
    monkeypatch.delenv(retries.name, raising=False)
    assert retries.get() == 7 and not retries.is_set()
    monkeypatch.setenv(retries.name, "  ")
    assert retries.get() == 7 and not retries.is_set()
    # when set: parsed
    monkeypatch.setenv(retries.name, " 3 ")
    assert retries.get() == 3 and retries.is_set()
    monkeypatch.setenv(insecure.name, "Yes")
    assert insecure.get() is True
    monkeypatch.setenv(insecure.name, "0")
    assert insecure.get() is False


def test_a_value_that_does_not_parse_is_bad_input_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "many")
    with pytest.raises(BadInput, match=r"\$MLFLOW_HTTP_REQUEST_MAX_RETRIES='many': not a int"):
        environment.MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "maybe")
    with pytest.raises(BadInput, match="MLFLOW_TRACKING_INSECURE_TLS='maybe': not a boolean"):
        environment.MLFLOW_TRACKING_INSECURE_TLS.get()


def test_each_variable_is_declared_once_and_only_declared_ones_are_looked_up():
    # every declaration is found under its own name, with a help text for the reference
    for name, declared in VARIABLES.items():
        assert environment.variable(name) is declared and declared.name == name
        assert declared.help and declared.group
    # a second declaration of a name, and a lookup of an undeclared one, are refused
    with pytest.raises(MlcpError, match="MLCP_DATA_ROOT is declared twice"):
        Variable("MLCP_DATA_ROOT", str, None, "again", "x")
    with pytest.raises(MlcpError, match="MLCP_NO_SUCH is not declared"):
        environment.variable("MLCP_NO_SUCH")


def test_every_secret_has_its_file_variable():
    # a secret the steps read (steps/base/secrets.py) is declared with NAME_FILE, where the
    # templates mount the credentials Secret
    from steps.base import secrets

    for name in secrets.STEP_SECRETS:
        assert secrets.file_variable(name) in VARIABLES, name
