"""The shape of the imports under ``steps/``, read from the source (no module is imported).

- The core (alias contract, moves, promote, gates, tracking, lineage, prompts, ...) never
  reaches a pipeline (``steps.cv``, ``steps.llm``) or a serving engine's client
  (``steps.serving.triton``, ``steps.serving.vllm``), directly or through another module:
  pipelines reach the core through the serving back ends registered as entry points.
- No import cycle among the modules under ``steps/``.

Both checks count every import: module level and inside functions, absolute and relative.
They take a root folder, so they also run on a small tree written here with the faults in
it, and as a script on any checkout::

    python -m tests.test_layout <root>     # prints the cycles and core -> pipeline paths
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from collections import deque
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "steps"

CORE = (
    "steps.aliases",
    "steps.contract",
    "steps.declare",
    "steps.describe",
    "steps.determinism",
    "steps.errors",
    "steps.experiments",
    "steps.gates",
    "steps.lineage",
    "steps.moves",
    "steps.pinning",
    "steps.policy",
    "steps.promote",
    "steps.prompts",
    "steps.provenance",
    "steps.report",
    "steps.reproduce",
    "steps.secrets",
    "steps.settings",
    "steps.tracking",
    "steps.traces",
    "steps.workflow_exit",
    "steps.backends",
    "steps.serving.openai_client",
)
CORE_IF_PRESENT = ("steps.stage", "steps.s3")
# A module is a pipeline (or a serving engine's client) when it is one of these or inside one.
# The built-in pipelines are read from their entry points (steps/pipelines.py), not listed.
PIPELINES = (
    *sorted(
        {
            point.value.partition(":")[0].rpartition(".")[0]
            for point in entry_points(group="mlcp.pipelines")
            if point.value.startswith("steps.")
        }
    ),
    "steps.serving.triton",
    "steps.serving.vllm",
)


# ---------------------------------------------------------------------------- the graph


def modules(root: Path) -> dict[str, Path]:
    """Every module under ``<root>/steps`` by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((Path(root) / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module of the tree that importing ``name`` runs last: the longest known prefix."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of the tree that ``module`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    continue  # beyond the top package: Python refuses it too
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import name` imports pkg.name when that is a module, else pkg
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, known)
            if resolved is not None and resolved != module:
                found.add(resolved)
            elif resolved == module and target == module:
                found.add(module)  # a module importing itself by name: a cycle of one
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the tree it imports (module- and function-level)."""
    known = modules(root)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def _packages_of(module: str, graph: dict[str, set[str]]) -> list[str]:
    """The packages whose ``__init__`` runs before ``module`` does."""
    parts = module.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in graph]


# ---------------------------------------------------------------------------- the checks


def is_pipeline(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in PIPELINES)


def core_modules(root: Path) -> list[str]:
    """The core modules present in the tree (CORE, and CORE_IF_PRESENT where they exist)."""
    known = modules(root)
    return [m for m in CORE + CORE_IF_PRESENT if m in known]


def core_to_pipeline_paths(root: Path, core: list[str] | None = None) -> list[list[str]]:
    """For each core module that reaches a pipeline, the shortest chain of imports that
    does. Importing a module also runs its packages' ``__init__``, so those count too."""
    graph = import_graph(root)
    paths = []
    for start in core if core is not None else core_modules(root):
        if start not in graph:
            continue
        came_from: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            module = queue.popleft()
            if is_pipeline(module):
                path = [module]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])
                paths.append(path[::-1])
                break
            for nxt in sorted(graph[module] | set(_packages_of(module, graph))):
                if nxt not in came_from:
                    came_from[nxt] = module
                    queue.append(nxt)
    return paths


def cycles(root: Path) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) for every group of modules that import each other."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for nxt in sorted(graph[module]):
            if nxt not in index:
                connect(nxt)
                low[module] = min(low[module], low[nxt])
            elif nxt in on_stack:
                low[module] = min(low[module], index[nxt])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1 or module in graph[module]:
                groups.append(group)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for module in sorted(graph):
            if module not in index:
                connect(module)
    finally:
        sys.setrecursionlimit(limit)
    return sorted((_one_cycle(group, graph) for group in groups), key=lambda c: c[0])


def _one_cycle(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """The shortest cycle through the group's first module, staying inside the group."""
    start = min(group)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for nxt in sorted(graph[module] & group):
            if nxt == start:
                path = [module]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *path[::-1][1:], start] if module != start else [start, start]
            if nxt not in came_from:
                came_from[nxt] = module
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")  # not reached


def arrows(path: list[str]) -> str:
    return " -> ".join(path)


# ---------------------------------------------------------------------------- this tree


def test_every_core_module_named_here_exists():
    # given the modules under steps/ / then the core list names no module that is gone
    # (a renamed core module would otherwise escape the check)
    known = modules(ROOT)
    assert [m for m in CORE if m not in known] == []


def test_the_core_never_reaches_a_pipeline_or_a_serving_engine():
    # given every import under steps/ / when followed from each core module
    paths = core_to_pipeline_paths(ROOT)
    # then none reaches steps.cv, steps.llm, steps.serving.triton or steps.serving.vllm
    assert not paths, "the core reaches a pipeline:\n" + "\n".join(arrows(p) for p in paths)


def test_no_import_cycle_under_steps():
    found = cycles(ROOT)
    assert not found, "import cycles under steps/:\n" + "\n".join(arrows(c) for c in found)


# ---------------------------------------------------------------------------- the checks fail


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(inspect.cleandoc(text) + "\n")
    return root


# today's fault, in small: promote -> moves -> (in a function) serving.follow -> llm.deploy
# -> moves again; serving.follow reaches the pipeline through a relative, function-level import
FAULTY = {
    "steps/__init__.py": "",
    "steps/errors.py": "",
    "steps/contract.py": "",
    "steps/promote.py": """
        from .moves import apply
        from . import errors
        """,
    "steps/moves.py": """
        import os

        from .contract import LIVE

        def apply():
            from .serving.follow import follow_live
            return follow_live
        """,
    "steps/serving/__init__.py": "",
    "steps/serving/follow.py": """
        from ..errors import BadInput

        def follow_live():
            from ..llm import deploy
            from . import vllm
            return deploy, vllm
        """,
    "steps/serving/vllm.py": "import json",
    "steps/llm/__init__.py": "PIPELINE = 'llm'",
    "steps/llm/deploy.py": """
        from .. import moves
        from . import PIPELINE
        import steps.llm.data
        """,
    "steps/llm/data.py": "",
}


def test_the_graph_counts_function_level_relative_and_absolute_imports(tmp_path):
    # given a tree with every kind of import
    graph = import_graph(write_tree(tmp_path, FAULTY))
    # then each is resolved to the module it runs
    assert graph["steps.promote"] == {"steps.moves", "steps.errors"}
    assert graph["steps.moves"] == {"steps.contract", "steps.serving.follow"}
    assert graph["steps.serving.follow"] == {
        "steps.errors",
        "steps.llm.deploy",
        "steps.serving.vllm",
    }
    # `from . import PIPELINE` is the package, `from .. import moves` the module
    assert graph["steps.llm.deploy"] == {"steps.moves", "steps.llm", "steps.llm.data"}
    assert graph["steps.serving.vllm"] == set()


def test_a_cycle_and_a_core_to_pipeline_path_are_reported(tmp_path):
    # given today's fault in a small tree
    root = write_tree(tmp_path, FAULTY)
    # when both checks run on it
    found_cycles = cycles(root)
    found_paths = core_to_pipeline_paths(root)
    # then the cycle is reported as a path of imports
    assert found_cycles == [
        ["steps.llm.deploy", "steps.moves", "steps.serving.follow", "steps.llm.deploy"]
    ]
    # and so is every core module that reaches the pipeline (and the engine's client)
    assert [arrows(p) for p in found_paths] == [
        "steps.moves -> steps.serving.follow -> steps.llm.deploy",
        "steps.promote -> steps.moves -> steps.serving.follow -> steps.llm.deploy",
    ]


def test_a_package_init_that_imports_a_pipeline_leaks_into_the_core(tmp_path):
    # given a core module whose package's __init__ imports an engine client
    root = write_tree(
        tmp_path,
        {
            "steps/__init__.py": "",
            "steps/serving/__init__.py": "from . import triton",
            "steps/serving/openai_client.py": "",
            "steps/serving/triton.py": "",
        },
    )
    # then the path goes through the package
    assert [arrows(p) for p in core_to_pipeline_paths(root)] == [
        "steps.serving.openai_client -> steps.serving -> steps.serving.triton"
    ]


def test_a_module_importing_itself_is_a_cycle(tmp_path):
    root = write_tree(tmp_path, {"steps/__init__.py": "", "steps/gates.py": "import steps.gates"})
    assert cycles(root) == [["steps.gates", "steps.gates"]]


def test_script_mode_prints_what_it_finds_and_fails(tmp_path):
    # given the faulty tree / when the script runs on it
    root = write_tree(tmp_path, FAULTY)
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_layout", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then it names the cycle and the paths, and exits 1
    assert done.returncode == 1, done.stderr
    assert "steps.llm.deploy -> steps.moves -> steps.serving.follow -> steps.llm.deploy" in (
        done.stdout
    )
    assert "steps.promote -> steps.moves -> steps.serving.follow -> steps.llm.deploy" in (
        done.stdout
    )
    # and on this checkout it finds nothing
    clean = subprocess.run(
        [sys.executable, "-m", "tests.test_layout", str(ROOT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr


# ------------------------------------------------------------------ OpenAI-API calls by hand

# The paths of the OpenAI API's generating endpoints. A module that spells one builds its own
# request; the standard client (steps/serving/openai_client.py) spells none. vLLM's own
# endpoints (/health, /v1/models with its adapter fields, /v1/load_lora_adapter) are not here:
# the openai client does not cover them.
OPENAI_PATHS = re.compile(r"(^|/)v1/(chat/completions|completions|embeddings|responses)\b")


def hand_made_openai_requests(root: Path) -> list[str]:
    """``path:line: text`` of every string (f-strings' pieces included) under ``root/steps``
    that names an OpenAI-API path."""
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if OPENAI_PATHS.search(node.value):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    return found


def test_no_module_builds_openai_api_requests_by_hand(tmp_path):
    # given a tree whose client posts to the completions endpoint itself
    faulty = write_tree(
        tmp_path,
        {
            "steps/__init__.py": "",
            "steps/client.py": (
                "import urllib.request\n"
                "def complete(url, body):\n"
                "    return urllib.request.urlopen(f'{url}/v1/completions', body)\n"
            ),
        },
    )
    # then it is found
    assert [line.split(":")[0] for line in hand_made_openai_requests(faulty)] == ["steps/client.py"]
    # and this checkout has none: every such call goes through the openai client
    assert hand_made_openai_requests(ROOT) == []


# ---------------------------------------------------------------------------- serving back ends


def test_every_registered_back_end_implements_the_interface():
    from steps import backends as backend

    # given the back ends installed as entry points
    registered = {p.name for p in entry_points(group=backend.GROUP)}
    assert {"triton", "vllm"} <= registered
    # when each is loaded
    loaded = backend.known()
    # then each implements ServingBackend under its own name
    assert set(loaded) == registered
    for name, server in loaded.items():
        assert isinstance(server, backend.ServingBackend), name
        assert backend.problems(server, name) == [], name
        assert server.name == name
    # and declares what it needs in the cluster: vLLM the adapter volume, Triton nothing
    assert loaded["vllm"].volumes == (
        backend.Volume(name="adapters", claim="mlcp-vllm-adapters", mount_path="/adapters"),
    )
    assert loaded["triton"].volumes == ()


def test_for_model_finds_the_back_end_by_the_serving_tag():
    from steps import backends as backend
    from steps.contract import SERVING_TAG

    assert backend.for_model("m", {}) is None
    assert backend.for_model("m", {SERVING_TAG: ""}) is None
    assert backend.for_model("m", {SERVING_TAG: "vllm"}).name == "vllm"
    assert backend.for_model("m", {SERVING_TAG: "triton"}).name == "triton"


def test_an_unknown_serving_tag_is_bad_input_naming_the_known_back_ends():
    from steps import backends as backend
    from steps.contract import SERVING_TAG
    from steps.errors import BadInput

    with pytest.raises(BadInput) as raised:
        backend.for_model("mnist", {SERVING_TAG: "torchserve"})
    message = str(raised.value)
    assert "'torchserve'" in message and "mnist" in message and SERVING_TAG in message
    assert "triton" in message and "vllm" in message


class _NoLoad:
    name = "broken"
    volumes = ()

    def served(self, model, slot):
        return []


BROKEN = _NoLoad()


def test_a_registered_object_that_is_no_back_end_is_refused_clearly(monkeypatch):
    from steps import backends as backend
    from steps.contract import SERVING_TAG
    from steps.errors import BadInput, MlcpError

    # given a registration that names an object without load_live, and one that cannot import
    points = [
        EntryPoint("broken", f"{__name__}:BROKEN", backend.GROUP),
        EntryPoint("gone", "steps.no_such_module:X", backend.GROUP),
    ]
    monkeypatch.setattr(backend, "entry_points", lambda group: points)
    # then using either says what is wrong, and an unknown name is still bad input
    with pytest.raises(MlcpError, match="broken.*no `load_live` method"):
        backend.for_model("m", {SERVING_TAG: "broken"})
    with pytest.raises(MlcpError, match="'gone'.*cannot be imported"):
        backend.for_model("m", {SERVING_TAG: "gone"})
    with pytest.raises(BadInput, match="known: broken, gone"):
        backend.for_model("m", {SERVING_TAG: "triton"})


def test_the_core_and_the_back_ends_import_no_heavy_library():
    # given a fresh interpreter / when the core and every back end are imported
    code = (
        "import sys\n"
        "from steps import audit, moves, promote, serving_state\n"
        "from steps import backends as backend\n"
        "backend.known()\n"
        "print(sorted(m for m in ('mlflow', 'torch', 'numpy', 'transformers') "
        "if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    # then none of mlflow, torch, numpy, transformers was imported
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- script mode


def main(argv: list[str] | None = None) -> int:
    """Print the cycles and the core -> pipeline paths under ``<root>/steps``; 1 if any."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / PACKAGE).is_dir():
        print("usage: python -m tests.test_layout <root with a steps/ folder>", file=sys.stderr)
        return 2
    root = Path(args[0])
    found_cycles = cycles(root)
    found_paths = core_to_pipeline_paths(root)
    print(f"import cycles under {root / PACKAGE}: {len(found_cycles)}")
    for cycle in found_cycles:
        print(f"  {arrows(cycle)}")
    print(f"core -> pipeline paths: {len(found_paths)}")
    for path in found_paths:
        print(f"  {arrows(path)}")
    return 1 if found_cycles or found_paths else 0


if __name__ == "__main__":
    sys.exit(main())
