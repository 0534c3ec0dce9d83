"""The files a step leaves under ``$MLCP_OUTPUT_DIR``, which the Argo templates read as their
output parameters (``workflows/specs.py`` declares the outputs from the names here).

Nothing is written when the variable is unset (a command run by hand). Standard library
only: the templates' build reads the names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from .environment import MLCP_OUTPUT_DIR

OUTPUT_DIR_VARIABLE = MLCP_OUTPUT_DIR.name
# The promote step's outputs besides version and moves: what it did (promote, rollback or
# none) and the model's pipeline, written as soon as it is known (also when a gate refuses),
# else UNKNOWN_PIPELINE: the labels of its metrics.
ACTION = "action"
PIPELINE = "pipeline"
UNKNOWN_PIPELINE = "unknown"
# The rollout step's output: true when it held the weight after a step (``--until``), which
# the template's approval loop reads to suspend and run it again.
HELD = "held"


def write(values: Mapping[str, str]) -> None:
    """Write each value as the file ``$MLCP_OUTPUT_DIR/<name>``; nothing when unset."""
    folder = MLCP_OUTPUT_DIR.get()
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (Path(folder) / name).write_text(value)


# ------------------------------------------------------------------ gates


def gate_value(gate: str) -> str:
    """The output (and file) holding the value a gate judged: ``gate-accuracy``."""
    return f"gate-{gate}"


def gate_passed(gate: str) -> str:
    """The output (and file) holding a gate's verdict as a number: 1 passed, 0 refused."""
    return f"gate-{gate}-passed"


def gate_files(gate: str, value: float | None, passed: bool) -> dict[str, str]:
    """A judged gate's two output files; the value is empty when it was not measured (the
    templates' metrics then emit nothing for it)."""
    measured = value is not None and not (isinstance(value, float) and math.isnan(value))
    return {
        gate_value(gate): f"{float(value):.10g}" if measured else "",
        gate_passed(gate): "1" if passed else "0",
    }
