"""A pipeline imports the public surface ``mlcp`` and nothing else: every Python file under
``examples/`` and every Python code block of the docs (the tutorial's included files among
them) is parsed, and an import of ``steps`` or of a name ``mlcp`` does not export fails."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from steps import mlcp as surface

from .conftest import ROOT

SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.M | re.S)


def violations(source: str, where: str) -> list[str]:
    """Each import of ``source`` that reaches past the public surface."""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "steps" or (top == "mlcp" and alias.name != "mlcp"):
                    found.append(f"{where}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top == "steps" or (top == "mlcp" and node.module != "mlcp"):
                found.append(f"{where}:{node.lineno}: from {node.module} import ...")
            elif node.module == "mlcp":
                private = [a.name for a in node.names if a.name not in surface.__all__]
                if private:
                    found.append(f"{where}:{node.lineno}: mlcp has no public {private}")
    return found


def python_sources() -> dict[str, str]:
    """Every example module, and every Python code block of the docs (snippets expanded)."""
    sources = {
        str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "examples").rglob("*.py"))
    }
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = SNIPPET.sub(
            lambda m: (ROOT / m.group(1).split(":")[0]).read_text(), page.read_text()
        )
        for index, block in enumerate(BLOCK.findall(text)):
            sources[f"{page.relative_to(ROOT)}#block{index}"] = block
    return sources


def test_examples_and_tutorials_import_the_public_surface_only():
    sources = python_sources()
    # the example's modules and the tutorial's code are among what is read
    assert any(k.startswith("examples/tabular/mlcp_tabular/") for k in sources)
    assert any(k.startswith("docs/tutorials/own-model-type.md#") for k in sources)
    found = [v for where, source in sources.items() for v in violations(source, where)]
    assert found == []


@pytest.mark.parametrize(
    "planted",
    [
        "from steps.stages.stage import Reporter",
        "import steps.spec.contract",
        "from mlcp import moves",
        "from mlcp.contract import LIVE",
        "import mlcp.perf",
    ],
)
def test_an_import_past_the_surface_is_found(planted):
    assert violations(f"from mlcp import Stage\n{planted}\n", "planted.py")
    assert not violations("from mlcp import Stage, contract\nimport mlcp\n", "fine.py")


def test_every_public_name_exists_and_is_documented():
    page = (ROOT / "docs" / "reference" / "public-surface.md").read_text()
    for name in surface.__all__:
        assert hasattr(surface, name), name
        assert f"| `{name}` |" in page, name
    assert Path(surface.__file__).parent == ROOT / "steps" / "mlcp"
