"""The layers of the code, held by import-linter's contracts (``[tool.importlinter]`` in
pyproject.toml), and what import-linter cannot check.

The contracts say (every import counts: module level and inside functions):

- under ``steps``, each layer imports only the layers below it: the front (``docs``, ``cli``),
  the pipelines (``cv | llm``: independent), the public surface (``mlcp``), the local stack
  (``local``), the serving engines (``serving``), then the core's parts (``stages``,
  ``registry``, ``decisions``, ``records``, ``spec``, ``base``); every module of ``steps`` is
  in a layer (exhaustive), so a new module cannot escape the check;
- no pipeline imports another (``steps.cv``, ``steps.llm``, and ``mlcp_tabular``, the plugin
  of ``examples/tabular``); nothing under ``steps`` or ``workflows`` imports the plugin;
- the plugin imports the public surface ``mlcp``, never ``steps``;
- ``workflows`` imports no heavy library itself (its step declarations import them inside
  their functions; tests/test_workflows.py checks that rendering imports none);
- no import cycle, between modules or between packages.

The tests run ``lint-imports`` on this checkout, and on a copy of it with a violation of each
contract planted, so each contract is shown to fire.
"""

from __future__ import annotations

import ast
import inspect
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "steps"
PLUGIN = Path("examples/tabular")  # the folder of mlcp_tabular, the plugin pipeline
CONTRACTS = {
    c["id"]: c["name"]
    for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
}
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


# ---------------------------------------------------------------------------- the contracts


def lint_imports(root: Path, tmp: Path) -> tuple[int, str, dict[str, str]]:
    """Run ``lint-imports`` on the checkout ``root`` (its own pyproject.toml, its own code: the
    packages are found on a path that names ``root`` only): exit code, output, and the
    verdict (KEPT or BROKEN) of each contract by name."""
    path = tmp / "path"
    path.mkdir(exist_ok=True)
    surface = path / "mlcp"  # the public surface, as the package directory mapping installs it
    if not surface.exists():
        surface.symlink_to(root / PACKAGE / "mlcp", target_is_directory=True)
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "PYTHONPATH": ":".join([str(root), str(path), str(root / PLUGIN)]),
        "HOME": str(tmp),
        "COLUMNS": "200",  # one line per contract verdict
    }
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    verdicts = {}
    for line in output.splitlines():
        found = re.fullmatch(r"(.+?)\s*(KEPT|BROKEN)", line.strip())
        if found:
            verdicts[found.group(1)] = found.group(2)
    return done.returncode, output, verdicts


def test_every_contract_is_kept_by_this_checkout(tmp_path):
    # given this checkout / when import-linter checks its contracts
    code, output, verdicts = lint_imports(ROOT, tmp_path)
    # then each contract of pyproject.toml was checked, and each is kept
    assert verdicts == {name: "KEPT" for name in CONTRACTS.values()}, output
    assert code == 0, output


def copy_tree(root: Path, to: Path) -> Path:
    """The code and the contracts of ``root``, copied to ``to`` (Python sources only)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*")
    for folder in (PACKAGE, "workflows", str(PLUGIN / "mlcp_tabular")):
        shutil.copytree(root / folder, to / folder, ignore=ignore)
    shutil.copy(root / "pyproject.toml", to / "pyproject.toml")
    return to


def plant(root: Path, module: str, line: str, *, in_function: bool = True) -> None:
    """Add ``line`` (an import) to the file of ``module`` under ``root``: inside a function, as
    most imports of this project are, or at module level."""
    base = root / PLUGIN if module.startswith("mlcp_tabular") else root
    path = base / (module.replace(".", "/") + ".py")
    text = path.read_text() if path.exists() else ""
    added = f"\n\ndef _planted():\n    {line}\n" if in_function else f"\n{line}\n"
    path.write_text(text + added)


# (contract id, module, the import planted in it); each breaks that contract
VIOLATIONS = [
    ("layers", "steps.registry.moves", "from steps.cv import data"),  # the core imports a pipeline
    ("layers", "steps.serving.vllm", "from steps.llm import PIPELINE"),  # serving a pipeline
    ("layers", "steps.local.stack", "from steps.llm import data"),  # the local stack a pipeline
    (
        "layers",
        "steps.decisions.gates",
        "from steps.serving import triton",
    ),  # the core a serving engine
    ("layers", "steps.unplaced", "import json"),  # a module in no layer (exhaustive)
    # a lower part of the core imports a higher one: the contract imports the alias client
    ("layers", "steps.spec.contract", "from steps.registry import aliases"),
    ("pipelines", "steps.llm.train", "from steps.cv import train"),  # a pipeline another
    ("pipelines", "mlcp_tabular.train", "from steps.cv import data"),
    ("no-plugin", "steps.stages.chain", "import mlcp_tabular"),  # the core imports the plugin
    ("surface", "mlcp_tabular.pipeline", "from steps.registry import moves"),  # past the surface
    ("workflows", "workflows.common", "import mlflow"),  # a heavy library in the wiring
    ("acyclic", "steps.base.errors", "import steps.decisions.gates"),  # errors <- gates -> errors
    ("acyclic", "workflows.specs", "from . import common"),  # between two wiring modules
]


@pytest.mark.parametrize(
    ("contract", "module", "line"),
    VIOLATIONS,
    ids=[f"{c}-{m}" for c, m, _ in VIOLATIONS],
)
def test_each_contract_fires_on_a_planted_violation(tmp_path, contract, module, line):
    # given a copy of this checkout with one import planted
    root = copy_tree(ROOT, tmp_path / "tree")
    plant(root, module, line)
    # when import-linter checks it
    code, output, verdicts = lint_imports(root, tmp_path)
    # then that contract is broken, naming the module, and the check fails
    assert code != 0, output
    assert verdicts[CONTRACTS[contract]] == "BROKEN", output
    assert module.rpartition(".")[2] in output, output
    # and every contract that the planted import does not touch is still kept
    if contract in ("surface", "workflows"):
        broken = {n for n, v in verdicts.items() if v == "BROKEN"}
        assert broken == {CONTRACTS[contract]}, output


def test_every_violation_kind_is_planted():
    # the list above plants a violation of every contract of pyproject.toml
    assert {c for c, _, _ in VIOLATIONS} == set(CONTRACTS)


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


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(inspect.cleandoc(text) + "\n")
    return root


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
    from steps.registry import backends as backend

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
    from steps.registry import backends as backend
    from steps.spec.contract import SERVING_TAG

    assert backend.for_model("m", {}) is None
    assert backend.for_model("m", {SERVING_TAG: ""}) is None
    assert backend.for_model("m", {SERVING_TAG: "vllm"}).name == "vllm"
    assert backend.for_model("m", {SERVING_TAG: "triton"}).name == "triton"


def test_an_unknown_serving_tag_is_bad_input_naming_the_known_back_ends():
    from steps.base.errors import BadInput
    from steps.registry import backends as backend
    from steps.spec.contract import SERVING_TAG

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
    from steps.base.errors import BadInput, MlcpError
    from steps.registry import backends as backend
    from steps.spec.contract import SERVING_TAG

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


def test_the_stacks_vllm_serves_the_base_its_back_end_names(monkeypatch, tmp_path):
    from steps.base.errors import MlcpError
    from steps.local import stack
    from steps.registry import backends

    # given the back end registered as vllm (the llm pipeline's): it names the base the
    # stack's vLLM serves, so the stack never imports the pipeline
    assert callable(backends.known()["vllm"].stack_base)
    # when no installed package registers a vllm back end (entry points faked: none)
    monkeypatch.setattr(backends, "entry_points", lambda group: [])
    # then starting the stack's vLLM says what is missing
    with pytest.raises(MlcpError, match="registered as 'vllm'.*no installed package"):
        stack._vllm_base(tmp_path)


def test_the_core_and_the_back_ends_import_no_heavy_library():
    # given a fresh interpreter / when the core and every back end are imported
    code = (
        "import sys\n"
        "from steps.registry import audit, moves, promote, serving_state\n"
        "from steps.registry import backends as backend\n"
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
