"""What a person pastes: the commands mlcp prints for them must run in their shell."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def assert_runnable(command: str) -> list[str]:
    """``command`` starts with an mlcp this shell finds (on PATH, or by its path from the
    folder the command was printed in); its words after the program."""
    words = shlex.split(command)
    if words[0] == "mlcp":
        assert shutil.which("mlcp"), f"{command!r}: no mlcp on PATH"
        return words[1:]
    if words[1:3] == ["-m", "steps.cli"]:
        assert Path(words[0]).is_file(), command
        return words[3:]
    assert (ROOT / words[0]).is_file() and words[0].endswith("/mlcp"), command
    return words[1:]


def assert_pasteable_rollback(out: str, model: str) -> None:
    """A chain's summary ends with the rollback command, as a person can paste it."""
    (line,) = [x for x in out.splitlines() if x.startswith("roll back with: ")]
    assert assert_runnable(line.removeprefix("roll back with: ")) == [
        "rollback",
        "--model-name",
        model,
    ]
