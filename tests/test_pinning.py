"""Pinned model revisions (steps/spec/pinning.py): a base model loaded by name needs a commit, or
``--allow-unpinned``, and the revision loaded is recorded on the run, the version, in
``mlcp lineage`` and compared by ``mlcp reproduce``.

Against the real session stack (MLflow, S3). Nothing is downloaded (HF_HUB_OFFLINE=1): the
"model hub" is a local Hugging Face cache this module writes, holding the project's own tiny
base under a commit, laid out as the hub client keeps a download
(``models--<org>--<name>/snapshots/<commit>/`` and ``refs/main``). The hub client finds a
pinned commit there offline, exactly as it would after a download.
"""

from __future__ import annotations

import json
import shutil

import pytest

from steps.base.errors import BadInput
from steps.llm import BASE_REVISION_TAG
from steps.llm import data as llmdata
from steps.spec import pinning
from steps.spec.contract import ALLOW_UNPINNED_TAG, TRAIN_RUN_TAG

from .conftest import run_mlcp, unique

TRAIN = ("--epochs", "1", "--rank", "2", "--max-length", "32", "--max-eval-perplexity", "1e9")
HUB_NAME = "mlcp-test/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, llm_data):
    """A Hugging Face cache holding the project's tiny base as HUB_NAME at COMMIT (also what
    its ``main`` branch points at): the environment an ``mlcp`` process reads it with."""
    root = tmp_path_factory.mktemp("hub")
    repo = root / ("models--" + HUB_NAME.replace("/", "--"))
    llmdata.build_base_folder(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return {"HF_HUB_CACHE": str(root), "HF_HUB_OFFLINE": "1"}


def registered(client, model: str) -> list:
    return client.search_registered_models(f"name = '{model}'")


def test_a_name_without_a_commit_is_refused_and_registers_nothing(client, hub):
    model = unique("pin-refused")
    # given a base model named on a hub, when it is trained on with no revision
    bare = run_mlcp("llm", "train", "--model-name", model, "--base-model", HUB_NAME, env=hub)
    # then it is bad input that says what to do, and nothing is registered
    assert bare.code == 2, bare.err[-2000:]
    assert f"base model '{HUB_NAME}' is a name on a model hub and has no --base-revision" in (
        bare.err
    )
    assert "--allow-unpinned" in bare.err
    # a branch is not a pin either
    branch = run_mlcp(
        "llm", "train", "--model-name", model, "--base-model", HUB_NAME, "--base-revision",
        "main", env=hub,
    )  # fmt: skip
    assert branch.code == 2 and "'main', which is not a commit hash" in branch.err, branch.err
    # a commit the cache does not hold is bad input too (nothing is downloaded)
    missing = run_mlcp(
        "llm", "train", "--model-name", model, "--base-model", HUB_NAME, "--base-revision",
        OTHER, env=hub,
    )  # fmt: skip
    assert missing.code == 2 and f"at revision {OTHER}" in missing.err, missing.err[-2000:]
    assert registered(client, model) == []


def test_a_pinned_name_trains_and_its_revision_is_in_the_run_lineage_and_reproduce(client, hub):
    model = unique("pin-commit")
    # when the same name is trained on at a commit
    trained = run_mlcp(
        "llm", "train", "--model-name", model, "--base-model", HUB_NAME, "--base-revision",
        COMMIT, *TRAIN, env=hub, timeout=600,
    )  # fmt: skip
    assert trained.code == 0, trained.err[-3000:]
    # then the version and its training run record the commit, and no unpinned load
    version = client.get_model_version(model, "1")
    assert version.tags[BASE_REVISION_TAG] == COMMIT
    run = client.get_run(version.tags[TRAIN_RUN_TAG])
    assert run.data.tags[BASE_REVISION_TAG] == COMMIT
    assert run.data.tags[ALLOW_UNPINNED_TAG] == "false"
    assert run.data.params["base_revision"] == COMMIT
    # and mlcp lineage shows it, as JSON and as text
    as_json = run_mlcp("lineage", f"{model}@candidate", "--json")
    assert as_json.code == 0, as_json.err
    models = json.loads(as_json.out)["provenance"]["models"]
    assert models == {"revisions": {"base_model": COMMIT}, "allow_unpinned": False}
    as_text = run_mlcp("lineage", f"{model}@candidate")
    assert f"  model base_model at revision {COMMIT}" in as_text.out
    assert "unpinned load allowed" not in as_text.out
    # and mlcp reproduce loads the recorded commit again and compares it
    client.set_registered_model_alias(model, "live", "1")
    again = run_mlcp("reproduce", f"{model}@live", "--tolerance", "1e-4", env=hub, timeout=600)
    assert again.code == 0, again.err[-3000:]
    summary = json.loads(again.out.strip().splitlines()[-1])
    assert summary["revisions"] == {
        "base_model": {"recorded": COMMIT, "reproduced": COMMIT, "same": True}
    }
    record = client.get_run(summary["record_run"])
    assert record.data.params["revision.base_model.recorded"] == COMMIT
    # a reproduction of a hub version whose revision the cache no longer holds is refused
    client.set_model_version_tag(model, "1", BASE_REVISION_TAG, OTHER)
    moved = run_mlcp("reproduce", f"{model}@live", env=hub, timeout=600)
    assert moved.code == 2 and f"at revision {OTHER}" in moved.err, moved.err[-2000:]


def test_allow_unpinned_loads_by_name_and_is_recorded(client, hub):
    model = unique("pin-unpinned")
    trained = run_mlcp(
        "llm", "train", "--model-name", model, "--base-model", HUB_NAME, "--allow-unpinned",
        *TRAIN, env=hub, timeout=600,
    )  # fmt: skip
    assert trained.code == 0, trained.err[-3000:]
    version = client.get_model_version(model, "1")
    # the commit the hub resolved (its main) is what is recorded, with the permission
    assert version.tags[BASE_REVISION_TAG] == COMMIT
    run = client.get_run(version.tags[TRAIN_RUN_TAG])
    assert run.data.tags[ALLOW_UNPINNED_TAG] == "true"
    assert run.data.params["allow_unpinned"] == "True"
    as_text = run_mlcp("lineage", f"{model}@candidate")
    assert "unpinned load allowed (--allow-unpinned)" in as_text.out


def test_a_folder_is_pinned_by_its_digest_and_a_wrong_digest_is_refused(client, hub, tmp_path):
    folder = tmp_path / "base"
    shutil.copytree(
        hub["HF_HUB_CACHE"] + f"/models--mlcp-test--tiny-llama/snapshots/{COMMIT}", folder
    )
    digest = llmdata.materialize(str(folder)).read.sha256
    model = unique("pin-folder")
    wrong = run_mlcp(
        "llm", "train", "--model-name", model, "--base-model", str(folder), "--base-revision",
        "sha256:" + "0" * 64,
    )  # fmt: skip
    assert wrong.code == 2, wrong.err[-2000:]
    assert f"is not the pinned revision: its digest is sha256:{digest}" in wrong.err
    assert registered(client, model) == []
    right = run_mlcp(
        "llm", "train", "--model-name", model, "--base-model", str(folder), "--base-revision",
        f"sha256:{digest}", *TRAIN, timeout=600,
    )  # fmt: skip
    assert right.code == 0, right.err[-3000:]
    assert client.get_model_version(model, "1").tags[BASE_REVISION_TAG] == f"sha256:{digest}"


# ------------------------------------------------------------------ without the stack


def test_the_rules_of_a_pin():
    # a name: a commit passes, nothing or a branch is refused unless allowed
    pinning.require_commit(HUB_NAME, COMMIT, allow_unpinned=False, what="base", flag="--rev")
    for revision in (None, "main", COMMIT[:12]):
        with pytest.raises(BadInput, match="--allow-unpinned"):
            pinning.require_commit(
                HUB_NAME, revision, allow_unpinned=False, what="base", flag="--rev"
            )
        pinning.require_commit(HUB_NAME, revision, allow_unpinned=True, what="base", flag="--rev")
    # a folder or tar: its digest, checked when given (a prefix of 32 digits or more)
    sha = "ab" * 32
    assert pinning.check_digest(None, sha, what="w", flag="--rev") == f"sha256:{sha}"
    assert pinning.check_digest(f"sha256:{sha[:32]}", sha, what="w", flag="--rev")
    assert pinning.check_digest(sha.upper(), sha, what="w", flag="--rev")
    with pytest.raises(BadInput, match="is not the pinned revision"):
        pinning.check_digest("cd" * 32, sha, what="w", flag="--rev")
    with pytest.raises(BadInput, match="is not a digest"):
        pinning.check_digest(sha[:8], sha, what="w", flag="--rev")
    # what a run records, and how two runs compare
    tags = pinning.tags({"base_model": COMMIT}, allow_unpinned=False)
    assert tags == {BASE_REVISION_TAG: COMMIT, ALLOW_UNPINNED_TAG: "false"}
    assert pinning.of_run(tags) == {"revisions": {"base_model": COMMIT}, "allow_unpinned": False}
    assert pinning.of_run({}) == {"revisions": {}, "allow_unpinned": None}
    other = pinning.tags({"base_model": OTHER}, allow_unpinned=True)
    assert pinning.compare(tags, other) == {
        "base_model": {"recorded": COMMIT, "reproduced": OTHER, "same": False}
    }
    assert pinning.compare({}, {}) == {}


def test_the_vllm_fit_check_reads_a_hub_base_only_at_its_pinned_commit(monkeypatch, tmp_path):
    from steps.serving import vllm

    base = vllm.BaseInfo(name="base", root=HUB_NAME, max_model_len=None)
    snapshot = tmp_path / ("models--" + HUB_NAME.replace("/", "--")) / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"hidden_size": 128}))
    import huggingface_hub.constants as hub_settings  # read once, when first imported

    monkeypatch.setattr(hub_settings, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_settings, "HF_HUB_OFFLINE", True)  # nothing is downloaded
    monkeypatch.delenv("MLCP_VLLM_BASE_HIDDEN_SIZE", raising=False)
    # no pinned commit: nothing is read by name, the size is unknown and the check says why
    monkeypatch.delenv(vllm.BASE_REVISION_VAR, raising=False)
    assert vllm.served_hidden_size(base) is None
    tags = {"mlcp.base_model": "base", "mlcp.hidden_size": "128", BASE_REVISION_TAG: COMMIT}
    (problem,) = vllm.check_fits(tags, base, None)
    assert vllm.BASE_REVISION_VAR in problem
    # pinned: its config.json is read at that commit, and an adapter of another commit misfits
    monkeypatch.setenv(vllm.BASE_REVISION_VAR, COMMIT)
    assert vllm.served_hidden_size(base) == 128
    assert vllm.check_fits(tags, base, 128) == []
    (problem,) = vllm.check_fits({**tags, BASE_REVISION_TAG: OTHER}, base, 128)
    assert f"trained on base revision {OTHER}, the server serves {COMMIT}" in problem
