"""Prompt versioning (steps.records.prompts) against the real MLflow server and prompt registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import mlflow
import mlflow.genai
import pytest

from steps.base.errors import BadInput, MlcpError
from steps.records import prompts, tracking

from .conftest import unique


def use_in_run(*uses: tuple[str, str]):
    """Open a stage run, use each (name, text) prompt in it; return the run id and versions."""
    with tracking.stage_run(
        "test", "judge", unique("prompt-model"), "judge", system_metrics=False
    ) as run:
        versions = [prompts.use(name, text) for name, text in uses]
    return run.info.run_id, versions


def test_use_logs_artifact_tags_and_registers(client, tmp_path, stack_env):
    name = unique("judge")
    text = "Grade the answer: {{answer}}\nReply with a score from 1 to 5."
    run_id, [used] = use_in_run((name, text))
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert used.name == name and used.sha256 == digest == prompts.sha256(text)

    artifact = client.download_artifacts(run_id, f"prompts/{name}.txt", str(tmp_path))
    assert Path(artifact).read_text() == text

    tags = client.get_run(run_id).data.tags
    assert tags[f"mlcp.prompt.{name}.sha256"] == digest
    assert tags[f"mlcp.prompt.{name}.version"] == str(used.registry_version)
    assert tags["mlcp.prompts"] == f"{name}:{digest}"

    registered = mlflow.genai.load_prompt(f"prompts:/{name}/{used.registry_version}")
    assert registered.template == text
    assert used.registry_version == 1


def test_several_prompts_in_one_run_are_all_listed(client, stack_env):
    judge, system = unique("judge"), unique("system")
    run_id, [a, b] = use_in_run((judge, "Judge {{x}}"), (system, "You are terse."))
    listed = client.get_run(run_id).data.tags["mlcp.prompts"].split(",")
    assert sorted(listed) == sorted([f"{judge}:{a.sha256}", f"{system}:{b.sha256}"])


def test_same_text_reuses_the_registered_version_changed_text_makes_a_new_one(stack_env):
    name = unique("judge")
    _, [first] = use_in_run((name, "Score {{answer}} from 1 to 5."))
    _, [again] = use_in_run((name, "Score {{answer}} from 1 to 5."))
    assert again.registry_version == first.registry_version
    assert again.sha256 == first.sha256
    _, [changed] = use_in_run((name, "Score {{answer}} from 1 to 10."))
    assert changed.registry_version == first.registry_version + 1
    assert changed.sha256 != first.sha256
    assert (
        mlflow.genai.load_prompt(f"prompts:/{name}/{changed.registry_version}").template
        == "Score {{answer}} from 1 to 10."
    )
    assert (
        mlflow.genai.load_prompt(f"prompts:/{name}/{first.registry_version}").template
        == "Score {{answer}} from 1 to 5."
    )


def test_using_a_prompt_again_in_the_same_run_replaces_its_entry(client, stack_env):
    name = unique("judge")
    run_id, [_, second] = use_in_run((name, "Version one {{x}}"), (name, "Version two {{x}}"))
    tags = client.get_run(run_id).data.tags
    assert tags["mlcp.prompts"] == f"{name}:{second.sha256}"
    assert tags[f"mlcp.prompt.{name}.sha256"] == second.sha256


def test_find_runs_by_hash_with_and_without_name(client, stack_env):
    judge, other = unique("judge"), unique("other")
    text = f"Shared judge text {unique('t')} {{{{answer}}}}"
    first, [used] = use_in_run((judge, text))
    second, _ = use_in_run((judge, text), (other, "Something else"))
    same_text_other_name, _ = use_in_run((other, text))
    different, _ = use_in_run((judge, text + " Be strict."))

    by_hash = {r.info.run_id for r in prompts.find_runs(client, used.sha256)}
    assert by_hash == {first, second, same_text_other_name}
    by_name = {r.info.run_id for r in prompts.find_runs(client, used.sha256, judge)}
    assert by_name == {first, second}
    assert different not in by_hash
    assert prompts.find_runs(client, "0" * 64) == []


@pytest.mark.parametrize("name", ["", "has space", "a/b", "quote'd", "x" * 101])
def test_use_rejects_bad_names(name, stack_env):
    with tracking.stage_run("test", "judge", "m", "bad-name", system_metrics=False):
        with pytest.raises(BadInput, match="invalid prompt name"):
            prompts.use(name, "Some text")


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_use_rejects_empty_text(text, stack_env):
    with tracking.stage_run("test", "judge", "m", "empty", system_metrics=False):
        with pytest.raises(BadInput, match="is empty"):
            prompts.use(unique("judge"), text)


def test_use_without_an_active_run_is_an_error(stack_env):
    assert mlflow.active_run() is None
    with pytest.raises(MlcpError, match="active MLflow run"):
        prompts.use(unique("judge"), "Some text")


@pytest.mark.parametrize(
    "digest", ["", "abc", "g" * 64, "A" * 64, "0" * 63, "0" * 65, "' OR '1'='1" + "0" * 53]
)
def test_find_runs_rejects_a_non_hex_digest(digest, client):
    with pytest.raises(BadInput, match="sha256"):
        prompts.find_runs(client, digest)


@pytest.mark.parametrize("name", ["a`b", "has space", "x' OR '1'='1"])
def test_find_runs_rejects_a_bad_name(name, client):
    with pytest.raises(BadInput, match="invalid prompt name"):
        prompts.find_runs(client, "0" * 64, name)
