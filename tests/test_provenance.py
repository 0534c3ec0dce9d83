"""Provenance on every run (steps.records.provenance): the reading of the commit, the image, the
library versions, CUDA and GPU and the seeds, and the tags every kind of run carries on the
real MLflow server, as ``mlcp lineage`` shows them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata

import mlflow
import pytest
from mlflow.utils import mlflow_tags

from steps import __version__
from steps.decisions import gates
from steps.records import provenance, tracking
from steps.registry import aliases, promote, report
from steps.spec import contract
from steps.spec.contract import (
    CUDA_TAG,
    ENV_TAG_PREFIX,
    GIT_COMMIT_TAG,
    GPU_TAG,
    IMAGE_TAG,
    PACKAGE_VERSION_TAG,
    PROVENANCE_TAGS,
    SEEDS_TAG,
    SOURCE_TYPE_TAG,
)
from steps.stages.workflow_exit import ExitConfig, record_exit

from .conftest import ROOT, unique

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def no_seeds(monkeypatch):
    monkeypatch.setattr(provenance, "_SEEDS", {})


def fake_checkout(root, head: str, refs: dict[str, str] | None = None, packed: str = ""):
    git = root / ".git"
    git.mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    for ref, sha in (refs or {}).items():
        (git / ref).parent.mkdir(parents=True, exist_ok=True)
        (git / ref).write_text(sha + "\n")
    if packed:
        (git / "packed-refs").write_text(packed)
    return git


# ------------------------------------------------------------------ the commit


def test_the_commit_of_a_branch_is_read_from_its_loose_ref(tmp_path):
    fake_checkout(tmp_path, "ref: refs/heads/main", {"refs/heads/main": SHA})
    assert provenance.read_commit(tmp_path) == SHA


def test_the_commit_of_a_branch_is_read_from_packed_refs(tmp_path):
    packed = (
        "# pack-refs with: peeled fully-peeled sorted\n"
        f"{OTHER} refs/heads/main\n"
        f"{SHA} refs/heads/feature/x\n"
        f"{OTHER} refs/tags/v1\n"
        f"^{SHA}\n"
    )
    fake_checkout(tmp_path, "ref: refs/heads/feature/x", packed=packed)
    assert provenance.read_commit(tmp_path) == SHA


def test_a_loose_ref_wins_over_packed_refs(tmp_path):
    fake_checkout(
        tmp_path,
        "ref: refs/heads/main",
        {"refs/heads/main": SHA},
        packed=f"{OTHER} refs/heads/main\n",
    )
    assert provenance.read_commit(tmp_path) == SHA


def test_a_detached_head_is_the_commit(tmp_path):
    fake_checkout(tmp_path, SHA.upper())
    assert provenance.read_commit(tmp_path) == SHA


def test_a_linked_worktree_reads_its_branch_from_the_common_folder(tmp_path):
    main = fake_checkout(tmp_path / "main", "ref: refs/heads/main", {"refs/heads/main": OTHER})
    worktree_git = main / "worktrees" / "wt"
    worktree_git.mkdir(parents=True)
    (worktree_git / "HEAD").write_text("ref: refs/heads/wt\n")
    (worktree_git / "commondir").write_text("../..\n")
    (main / "refs" / "heads" / "wt").write_text(SHA + "\n")
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / ".git").write_text(f"gitdir: {worktree_git}\n")
    assert provenance.read_commit(tmp_path / "wt") == SHA


@pytest.mark.parametrize(
    "head, refs",
    [
        ("ref: refs/heads/main", {}),  # a new repository: the branch has no commit yet
        ("not a commit", {}),
        ("ref: refs/heads/main", {"refs/heads/main": "garbage"}),
    ],
)
def test_no_commit_when_the_checkout_names_none(tmp_path, head, refs):
    fake_checkout(tmp_path, head, refs)
    assert provenance.read_commit(tmp_path) is None


def test_no_commit_outside_a_checkout(tmp_path):
    assert provenance.read_commit(tmp_path) is None


def test_this_checkout_is_read_like_git_reads_it():
    if not (ROOT / ".git").exists():
        pytest.skip("not run from a git checkout")
    git = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if git.returncode != 0:
        pytest.skip(f"git cannot read this checkout: {git.stderr.strip()}")
    assert provenance.read_commit(ROOT) == git.stdout.strip()


def test_the_environment_names_the_commit_and_the_image(monkeypatch):
    monkeypatch.setenv("MLCP_GIT_COMMIT", OTHER)
    monkeypatch.setenv("MLCP_IMAGE", "registry.example/mlcp-steps:1.2.3")
    found = provenance.tags()
    assert found[GIT_COMMIT_TAG] == OTHER
    assert found[IMAGE_TAG] == "registry.example/mlcp-steps:1.2.3"


def test_without_the_environment_the_checkout_then_unknown_and_local(monkeypatch):
    monkeypatch.delenv("MLCP_GIT_COMMIT", raising=False)
    monkeypatch.delenv("MLCP_IMAGE", raising=False)
    assert provenance.tags()[GIT_COMMIT_TAG] == (provenance.read_commit(ROOT) or "unknown")
    assert provenance.tags()[IMAGE_TAG] == "local"
    monkeypatch.setattr(provenance, "_checkout_commit", lambda: None)  # an installed copy
    assert provenance.tags()[GIT_COMMIT_TAG] == "unknown"


# ------------------------------------------------------------------ the rest of the tags


def test_the_tag_names_are_mlflows_own_where_it_has_one():
    assert contract.GIT_COMMIT_TAG == mlflow_tags.MLFLOW_GIT_COMMIT
    assert contract.SOURCE_NAME_TAG == mlflow_tags.MLFLOW_SOURCE_NAME
    assert contract.SOURCE_TYPE_TAG == mlflow_tags.MLFLOW_SOURCE_TYPE
    assert contract.SOURCE_TYPE == "JOB"
    assert contract.PACKAGE_VERSION_TAG == "mlcp.package_version"
    assert len(set(PROVENANCE_TAGS)) == len(PROVENANCE_TAGS)


def test_tags_name_every_provenance_key_with_a_value(no_seeds):
    found = provenance.tags()
    assert set(found) == set(PROVENANCE_TAGS)
    assert all(isinstance(v, str) and v for v in found.values()), found
    assert found[PACKAGE_VERSION_TAG] == __version__ == metadata.version("mlflow-control-plane")
    assert found[SOURCE_TYPE_TAG] == "JOB"
    assert found[ENV_TAG_PREFIX + "python"] == ".".join(map(str, sys.version_info[:3]))
    assert found[ENV_TAG_PREFIX + "mlflow"] == metadata.version("mlflow")
    assert found[ENV_TAG_PREFIX + "vllm"] in ("not installed", _installed("vllm"))
    assert found[SEEDS_TAG] == "none"


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_the_seeds_noted_are_one_tag(no_seeds):
    assert provenance.seeds() == "none"
    provenance.note_seed("torch", 0)
    provenance.note_seed("numpy", 7)
    provenance.note_seed("torch", 1)  # seeded again: the last value counts
    assert provenance.seeds() == "numpy=7,torch=1"
    assert provenance.tags()[SEEDS_TAG] == "numpy=7,torch=1"


@pytest.mark.parametrize(
    "argv, name",
    [
        (["/opt/mlcp/bin/mlcp", "cv", "train", "--epochs", "3"], "mlcp cv train"),
        (["mlcp", "promote", "--model-name", "m"], "mlcp promote"),
        (["mlcp", "lineage", "digits@live", "--json"], "mlcp lineage"),
        (["mlcp", "llm", "data", "publish", "extra"], "mlcp llm data publish"),
        ([str(ROOT / "steps" / "cli.py"), "record-exit"], "mlcp record-exit"),
        ([str(ROOT / "steps" / "cli.py"), "cv", "train", "--model-name", "m"], "mlcp cv train"),
        ([str(ROOT / "steps" / "docs.py"), "--check"], "python -m steps.docs"),
        ([str(ROOT / "steps" / "__main__.py"), "history"], "python -m steps history"),
        (["-c"], "python"),
        ([], "python"),
    ],
)
def test_the_source_name_says_what_ran(argv, name):
    assert provenance.source_name(argv) == name


def test_tags_never_import_torch_or_mlflow_and_read_cuda_only_from_a_loaded_torch():
    script = textwrap.dedent(
        """
        import json, sys
        from steps.records import provenance, tracking
        before = provenance.tags()
        tracking.context_tags("cv", "promote", "m", 1)
        heavy = ("torch", "mlflow", "transformers", "vllm")
        imported = sorted(m for m in heavy if m in sys.modules)
        import torch
        after = provenance.tags()
        print(json.dumps({"imported": imported, "before": before, "after": after,
                          "cuda": torch.version.cuda if torch.cuda.is_available() else None}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["imported"] == []
    assert found["before"][CUDA_TAG] == found["before"][GPU_TAG] == "not loaded"
    if found["cuda"] is None:
        assert found["after"][CUDA_TAG] == found["after"][GPU_TAG] == "cpu"
    else:
        assert found["after"][CUDA_TAG] == found["cuda"]
        assert found["after"][GPU_TAG] not in ("cpu", "not loaded")


def test_distributions_list_every_installed_one_once_sorted():
    found = provenance.distributions()
    by_name = {d["name"].lower().replace("_", "-"): d["version"] for d in found}
    assert by_name["mlflow"] == metadata.version("mlflow")
    assert "mlflow-control-plane" in by_name
    keys = [d["name"].lower().replace("_", "-").replace(".", "-") for d in found]
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    assert all(set(d) == {"name", "version"} for d in found)


# ------------------------------------------------------------------ every kind of run


def assert_provenance(tags: dict, *, commit: str = OTHER, image: str = "mlcp-steps:9.9.9"):
    missing = [k for k in PROVENANCE_TAGS if not tags.get(k)]
    assert not missing, missing
    assert tags[GIT_COMMIT_TAG] == commit
    assert tags[IMAGE_TAG] == image
    assert tags[PACKAGE_VERSION_TAG] == __version__
    assert tags[SOURCE_TYPE_TAG] == "JOB"
    assert tags[ENV_TAG_PREFIX + "mlflow"] == metadata.version("mlflow")


@pytest.fixture
def in_image(monkeypatch):
    """As in the step image: the commit baked in, the image passed by the template."""
    monkeypatch.setenv("MLCP_GIT_COMMIT", OTHER)
    monkeypatch.setenv("MLCP_IMAGE", "mlcp-steps:9.9.9")


def test_stage_decision_move_and_workflow_runs_carry_provenance(client, models, in_image):
    # given a version trained by a stage run, a gate decision on it and an alias move
    name = models.create(1)
    (version,) = [mv.version for mv in client.search_model_versions(f"name = '{name}'")]
    stage_run = client.get_run(client.get_model_version(name, version).run_id)
    decision = models.pass_gate(name, str(version))
    models.set_alias(name, "candidate", str(version))
    outcome = promote.promote(name, "candidate", "staged", reason="provenance test", client=client)
    exit_record = record_exit(
        ExitConfig(
            model_name=name,
            pipeline=unique("pipe"),
            workflow_name=unique("wf"),
            status="Succeeded",
        )
    )
    # then every run carries every provenance tag
    assert stage_run.data.tags[contract.KIND_TAG] == "stage"
    assert_provenance(stage_run.data.tags)
    decision_run = client.get_run(decision.run_id)
    assert decision_run.data.tags[contract.KIND_TAG] == "decision"
    assert_provenance(decision_run.data.tags)
    assert outcome.record_run_ids
    for run_id in outcome.record_run_ids:
        record = client.get_run(run_id)
        assert record.data.tags[contract.KIND_TAG] == "alias-move"
        assert_provenance(record.data.tags)
    workflow_run = client.get_run(exit_record["run_id"])
    assert workflow_run.data.tags[contract.KIND_TAG] == "workflow"
    assert_provenance(workflow_run.data.tags)


def test_a_decision_run_inside_a_stage_run_carries_it_too(client, models, in_image):
    model = models.create(1)
    with tracking.stage_run("test", "evaluate", model, "prov", version=1, system_metrics=False):
        decision = gates.evaluate(
            gates.Gate("quality", "accuracy", ">=", 0.5),
            model=model,
            version=1,
            value=0.9,
            pipeline="test",
            stage="evaluate",
        )
    assert_provenance(client.get_run(decision.run_id).data.tags)


def test_log_environment_logs_the_distributions_and_the_seeds(client, in_image, no_seeds, tmp_path):
    with tracking.stage_run("test", "train", unique("model"), "prov", system_metrics=False) as run:
        provenance.note_seed("seed", 3)
        provenance.log_environment()
    finished = client.get_run(run.info.run_id)
    assert finished.data.tags[SEEDS_TAG] == "seed=3"  # noted after the run started
    path = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path=provenance.DISTRIBUTIONS_ARTIFACT, dst_path=tmp_path
    )
    logged = json.loads(open(path).read())
    assert {"name": "mlflow", "version": metadata.version("mlflow")} in logged


def test_log_environment_needs_a_run():
    assert mlflow.active_run() is None
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        provenance.log_environment()


# ------------------------------------------------------------------ mlcp lineage


def test_lineage_shows_the_training_runs_code_image_and_environment(client, models, mlcp, in_image):
    # given a version whose training run ran in an image at a commit
    name = models.create(1)
    models.set_alias(name, "candidate", "1")
    # when lineage is asked for, as JSON (the command) and as text (what the command prints)
    as_json = mlcp("lineage", f"{name}@candidate", "--json")
    ref = aliases.parse_ref(f"{name}@candidate")
    as_text = "\n".join(report.lineage_lines(ref, report.lineage(client, name, "candidate")))
    # then both show it
    assert as_json.code == 0, as_json.err
    found = json.loads(as_json.out)["provenance"]
    assert found["code"] == {
        "commit": OTHER,
        "package_version": __version__,
        "source": found["code"]["source"],
    }
    assert found["code"]["source"]
    assert found["image"] == "mlcp-steps:9.9.9"
    env = found["environment"]
    assert env["mlflow"] == metadata.version("mlflow")
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(env) == {*contract.ENV_LIBRARIES, "cuda", "gpu", "seeds"}
    assert all(env.values()), env
    assert f"code: commit {OTHER}, package {__version__}" in as_text
    assert "image: mlcp-steps:9.9.9" in as_text
    assert f"mlflow {metadata.version('mlflow')}" in as_text
    assert f"cuda {env['cuda']}, gpu {env['gpu']}, seeds {env['seeds']}" in as_text


def test_lineage_of_a_run_without_provenance_says_not_recorded():
    found = provenance.of_run({GIT_COMMIT_TAG: SHA})
    assert found["code"]["commit"] == SHA and found["image"] is None
    lines = report.provenance_lines(found)
    assert f"  code: commit {SHA}, package not recorded (ran not recorded)" in lines
    assert "  image: not recorded" in lines
    assert report.provenance_lines(None) == []
