"""The tutorial "Add your own model type" (docs/tutorials/own-model-type.md) cannot drift:
its code blocks that carry a file name (```` ```python title="mlcp_iris/data.py" ````) are
written into a temporary folder, which pip installs as a package; its chain then runs
against the session's MLflow and its templates are built and validated like the others.

pip installs it into a folder of this test's own (``--target``), which the processes the
test starts find on their path, rather than into the shared environment: a pipeline
installed there, even for a minute, would appear in every other test's discovery that runs
beside this one (the generated templates compared with the committed ones, the docs).
Removing the folder uninstalls it, whatever happened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from .conftest import ROOT, run_mlcp, unique

TUTORIAL = ROOT / "docs" / "tutorials" / "own-model-type.md"
FILE_BLOCK = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.M | re.S)
PIPELINE = "iris"


def tutorial_files() -> dict[str, str]:
    """The tutorial's files: each block with a title, its text by its path."""
    found: dict[str, str] = {}
    for path, text in FILE_BLOCK.findall(TUTORIAL.read_text()):
        assert path not in found, f"{path} is written twice in the tutorial"
        found[path] = text
    return found


def test_the_tutorial_names_its_files_unambiguously():
    files = tutorial_files()
    assert set(files) == {
        "pyproject.toml",
        "mlcp_iris/__init__.py",
        "mlcp_iris/data.py",
        "mlcp_iris/stages.py",
        "mlcp_iris/pipeline.py",
    }
    assert 'iris = "mlcp_iris.pipeline:IRIS"' in files["pyproject.toml"]


@pytest.fixture(scope="module")
def plugin(stack_env, tmp_path_factory):
    """The tutorial's package, installed by pip into its own folder: the environment that
    puts it on the path of an ``mlcp`` process."""
    folder = tmp_path_factory.mktemp("tutorial")
    package, site = folder / "package", folder / "site"
    for path, text in tutorial_files().items():
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).write_text(text)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    pip += ["--no-build-isolation", "--target", str(site), str(package)]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=180)
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert (site / "mlcp_iris" / "stages.py").is_file()
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    try:
        yield {"PYTHONPATH": path}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_tutorial_plugin_runs_its_chain_live_and_renders_its_templates(plugin, client):
    model = unique("iris")
    # given the tutorial's package installed and its data published
    assert PIPELINE in run_mlcp("--help", env=plugin).out.split()
    published = run_mlcp("data", PIPELINE, env=plugin)
    assert published.code == 0, published.err
    # when its chain runs on a new model
    first = run_mlcp(PIPELINE, "chain", "--model-name", model, env=plugin, timeout=300)
    # then v1 is live, its gates recorded on it
    assert first.code == 0, first.err[-3000:]
    registered = client.get_registered_model(model)
    assert registered.aliases["live"] == "1"
    assert registered.tags["mlcp.pipeline"] == PIPELINE
    tags = client.get_model_version(model, "1").tags
    for gate in ("train-accuracy", "accuracy", "accuracy-vs-champion"):
        assert tags[f"mlcp.gate.{gate}.verdict"] == "pass", (gate, tags)
    # when a second chain trains another version
    second = run_mlcp(
        PIPELINE,
        "chain",
        "--model-name",
        model,
        "--train-args",
        "--c 0.5",
        env=plugin,
        timeout=300,
    )
    # then it was judged against the champion side by side, and went live
    assert second.code == 0, second.err[-3000:]
    assert re.search(r"v2 vs live v1 on \d+ samples: accuracy difference", second.err)
    now = client.get_registered_model(model).aliases
    assert (now["live"], now["previous"]) == ("2", "1")
    # and bad input exits 2 and moves no alias
    bad = run_mlcp(PIPELINE, "train", "--model-name", model, "--c", "0", env=plugin)
    assert bad.code == 2 and "--c" in bad.err, bad.err
    assert client.get_registered_model(model).aliases == now
    # and its templates build from its declaration and validate strictly like the others
    from hera.workflows import models as hm

    from .test_workflows import strict_errors

    script = (
        "import json; from workflows import build; "
        f"print(json.dumps(build.generate(pipelines=[{PIPELINE!r}])))"
    )
    built = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, **plugin},
    )
    assert built.returncode == 0, built.stderr[-3000:]
    generated = json.loads(built.stdout)
    names = sorted(n for n in generated if n.startswith(f"{PIPELINE}-"))
    assert names == [f"{PIPELINE}-{n}.yaml" for n in ("evaluate", "pipeline", "train")]
    for name in names:
        doc = yaml.safe_load(generated[name])
        assert strict_errors(doc, hm.WorkflowTemplate) == [], name
    chain = yaml.safe_load(generated[f"{PIPELINE}-pipeline.yaml"])
    refs = [
        s["templateRef"]["name"]
        for t in chain["spec"]["templates"]
        for group in t.get("steps") or []
        for s in group
        if "templateRef" in s
    ]
    assert refs[:3] == [f"{PIPELINE}-train", f"{PIPELINE}-evaluate", "promote"]
