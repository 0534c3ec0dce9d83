"""The LLM chain end to end through the CLI, against the real MLflow server and S3 endpoint of
the session stack and a real vLLM server (the CPU build, from its own environment) that this
module starts on the base model `mlcp data llm` published: aliases after each stage, one
decision run per gate, data lineage, the judge prompt's hash, the adapter beating the bare
base, and vLLM's live slot following promote and rollback; then bad input.

Nothing is downloaded from a model hub (HF_HUB_OFFLINE=1). The vLLM environment is built once
in the checkout's ``.mlcp/env-cache/`` (``conftest.ENV_CACHE``) and reused by later sessions.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from steps.base.errors import BadInput, MlcpError
from steps.decisions import paired
from steps.llm import data as llmdata
from steps.llm import judge
from steps.llm.pipeline import LLM
from steps.llm.serving import VLLM as VLLM_BACKEND
from steps.local import stack
from steps.records import prompts
from steps.registry import moves
from steps.registry.backends import Served
from steps.serving import vllm
from steps.spec.contract import REQUIRED_GATES_TAG

from .commands import assert_pasteable_rollback
from .conftest import unique

free_port = stack.free_port
ROOT = Path(__file__).resolve().parents[1]

TRAIN = ("--epochs", "1", "--max-eval-perplexity", "100000")  # plumbing only, not quality
# Generous absolute bounds: this test checks the plumbing, not the speed of a shared 2-core
# machine. The ratio gates against the champion keep their defaults: they compare two slots
# measured side by side, so an equal adapter passes them however busy the machine is.
# 6 s: the paired tokens-per-second ratio is bootstrapped over per-second buckets, and on a
# loaded machine 3 s left 3 or 4 buckets, too few for an interval (nan: the gate refuses).
PERF = "--users 2 --duration 6 --max-ttft-p95-ms 20000 --max-e2e-p95-ms 20000 --min-tokens-per-s 1"
CHAMPION_GATES = {
    "correct-rate-vs-champion",
    "ttft-p95-vs-champion",
    "tokens-per-second-vs-champion",
}
GATES = {
    "max-eval-perplexity",
    "correct-rate",
    "refusal-rate",
    "gain-over-base",
    "ttft-p95",
    "e2e-p95",
    "tokens-per-second",
    "success-rate",
    *CHAMPION_GATES,
}
# Prompts unlike anything trained: two adapters trained with different seeds answer them
# differently, so the answers tell which adapter a slot serves.
COUNTS = ("both_right", "only_challenger", "only_champion", "both_wrong")
PROBES = ("the moon and the", "where is the door ?", "first: red", "song song song")


def decisions(client, model: str, version: str) -> dict[str, object]:
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`mlcp.kind` = 'decision' AND tags.`mlcp.model` = '{model}' "
        f"AND tags.`mlcp.version` = '{version}'",
    )
    found: dict[str, object] = {}
    for run in runs:
        gate = run.data.tags["mlcp.gate"]
        assert gate not in found, f"two decision runs for gate {gate}"
        found[gate] = run
    return found


def stage_run(client, model: str, stage: str):
    runs = client.search_runs(
        [client.get_experiment_by_name(f"llm/{stage}").experiment_id],
        f"tags.`mlcp.model` = '{model}' AND tags.`mlcp.kind` = 'stage'",
        order_by=["attributes.start_time DESC"],
    )
    assert runs, f"no {stage} run for {model}"
    return runs[0]


def decision_of(client, run) -> dict:
    """The ``decision.json`` a decision run carries."""
    return json.loads(Path(client.download_artifacts(run.info.run_id, "decision.json")).read_text())


def results_of(client, run) -> list[dict]:
    """The per-sample results table an evaluate run logged, as rows."""
    table = json.loads(
        Path(client.download_artifacts(run.info.run_id, "eval/results.json")).read_text()
    )
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def stats_of(client, run) -> dict:
    """The raw statistics a perf-test run logged."""
    return json.loads(
        Path(client.download_artifacts(run.info.run_id, "perf/stats.json")).read_text()
    )


def answers(server, slot: str) -> list[str]:
    """Deterministic (temperature 0) answers of a slot to the probes."""
    return [server.complete(slot, p, 8) for p in PROBES]


def demo_traces_command(model: str) -> list[str]:
    """The `mlcp traces` command `make demo-llm` runs (its arguments), for ``model``."""
    import shlex
    import subprocess

    dry = subprocess.run(
        ["make", "-n", "demo-llm", f"LLM_MODEL={model}"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    (line,) = [x for x in dry.stdout.splitlines() if "/mlcp traces " in x]
    return shlex.split(line)[1:]


def search_traces(run, filter_string: str | None = None) -> list:
    """The traces linked to ``run`` (MLflow's own search)."""
    import mlflow

    return mlflow.search_traces(
        locations=[run.info.experiment_id],
        run_id=run.info.run_id,
        filter_string=filter_string,
        return_type="list",
    )


def sides(model: str) -> list[tuple[str, str]]:
    """(slot, column prefix of the results table) of each slot an evaluation asks."""
    return [(f"{model}-staged", ""), (f"{model}-live", "champion_"), (llmdata.BASE_NAME, "base_")]


def assert_traced(client, model: str, evaluation, rows: list[dict], sha: str, versions) -> None:
    """The evaluation's traces: one per completion and one per judge call, tagged, found by
    the judge prompt's hash and by grade exactly as the results table says."""
    found = search_traces(evaluation)
    slots = [(slot, side) for slot, side in sides(model) if f"{side}grade" in rows[0]]
    assert len(found) == len(rows) * len(slots) * 2  # samples x slots + as many judge calls
    calls = [t.info.tags["mlcp.call"] for t in found]
    assert calls.count("answer") == calls.count("judge") == len(rows) * len(slots)
    expected = {
        (r["id"], slot, call): (versions.get(side, "none"), r[f"{side}grade"])
        for r in rows
        for slot, side in slots
        for call in ("answer", "judge")
    }
    seen = {
        (t.info.tags["mlcp.sample_id"], t.info.tags["mlcp.slot"], t.info.tags["mlcp.call"]): (
            t.info.tags["mlcp.version"],
            t.info.tags["mlcp.grade"],
        )
        for t in found
    }
    assert seen == expected
    assert all(t.info.tags["mlcp.judge_prompt.sha256"] == sha for t in found)
    # an answer: its own span around the autologged openai call, the grade as an assessment
    answer = next(t for t in found if t.info.tags["mlcp.call"] == "answer")
    assert [s.name for s in answer.data.spans] == ["answer", "Completions"]
    (feedback,) = [a for a in answer.info.assessments if a.name == "grade"]
    assert feedback.value == answer.info.tags["mlcp.grade"]
    assert feedback.source.source_type == "CODE" and feedback.source.source_id == "reference"
    judged = next(t for t in found if t.info.tags["mlcp.call"] == "judge")
    assert [s.name for s in judged.data.spans] == ["judge"]  # the reference judge: no HTTP
    # searches by judge prompt hash and by grade return exactly the expected traces
    by_sha = search_traces(evaluation, f"tags.`mlcp.judge_prompt.sha256` = '{sha}'")
    assert len(by_sha) == len(found)
    assert search_traces(evaluation, f"tags.`mlcp.judge_prompt.sha256` = '{'0' * 64}'") == []
    for grade in judge.GRADES:
        hits = search_traces(
            evaluation, f"tags.`mlcp.call` = 'answer' AND tags.`mlcp.grade` = '{grade}'"
        )
        want = {(r["id"], slot) for r in rows for slot, side in slots if r[f"{side}grade"] == grade}
        assert {(t.info.tags["mlcp.sample_id"], t.info.tags["mlcp.slot"]) for t in hits} == want
        assert len(hits) == len(want)


def run_chain(mlcp, model: str, seed: str) -> dict:
    """The local runner: every stage as its own process, then promote."""
    result = mlcp(
        "llm",
        "chain",
        "--model-name",
        model,
        "--seed",
        seed,
        "--duration",
        "6",
        "--perf-test-args",
        PERF,
        timeout=900,
    )
    assert result.code == 0, result.err[-3000:]
    for stage in ("train", "deploy", "evaluate", "perf-test", "promote"):
        assert f"==> {stage}" in result.err  # progress per stage
    assert "epoch 12/12" in result.err and "eval_loss" in result.err  # per-epoch progress
    assert "no champion: no champion" not in result.err  # said once, by the one who knows
    assert "no champion (no champion" not in result.err
    assert_pasteable_rollback(result.out, model)
    assert "the bare base mlcp-tiny-llama" in result.out  # both scores in the summary
    return json.loads(result.out[result.out.index("{") : result.out.index("}") + 1])


def test_llm_chain_promote_and_rollback_follow_vllm(
    mlcp, models, client, llm_data, vllm_server, stack_env, tmp_path
):
    model = unique("tinyllm")
    live = f"{model}-live"
    # train -> deploy -> evaluate -> perf-test -> promote, each stage its own process
    summary = run_chain(mlcp, model, seed="0")
    assert (summary["live"], summary["previous"]) == ("1", None)
    assert models.aliases(model) == {
        "candidate": "1",
        "staged": "1",
        "evaluated": "1",
        "benchmarked": "1",
        "live": "1",
    }
    # registering the model recorded its policy: every gate of the LLM pipeline
    policy = client.get_registered_model(model).tags[REQUIRED_GATES_TAG]
    assert policy.split(",") == list(LLM.gates)
    # the adapter measurably beats the bare base on the eval set
    assert summary["correct_rate"] >= 0.5
    assert summary["correct_rate"] - summary["base_correct_rate"] >= 0.4
    assert summary["score"] > summary["base_score"] + 0.4
    # one decision run per gate, with its thresholds and verdict
    found = decisions(client, model, "1")
    assert set(found) == GATES
    assert all(run.data.tags["mlcp.verdict"] == "pass" for run in found.values())
    assert found["correct-rate"].data.params["threshold"] == "0.5"
    assert found["max-eval-perplexity"].data.params["op"] == "<="
    # the first version has no champion: its champion gates pass as not applicable, with no
    # comparison recorded, and the load ran on the staged slot alone
    for gate in CHAMPION_GATES:
        run = found[gate]
        assert "mlcp.comparison" not in run.data.tags and "value" not in run.data.metrics
        reasons = decision_of(client, run)["reasons"]
        assert reasons == [
            f"no champion: {model}@live is unset: not applicable, only the absolute gates apply"
        ]
    perf = stage_run(client, model, "perf-test")
    assert set(stats_of(client, perf)["slots"]) == {f"{model}-staged"}
    # the registered model and version say what the adapter needs from a base
    registered = client.get_registered_model(model)
    assert registered.tags["mlcp.pipeline"] == "llm" and registered.tags["mlcp.serving"] == "vllm"
    tags = client.get_model_version(model, "1").tags
    assert tags["mlcp.base_model"] == llm_data["base_name"]
    assert (tags["mlcp.hidden_size"], tags["mlcp.lora_rank"]) == ("128", "8")
    assert tags["mlcp.target_modules"].split(",")[:2] == ["q_proj", "k_proj"]
    # data lineage: digest and source of the instructions on the train and evaluate runs
    digest = llmdata.read(llm_data["data"])[0].digest
    assert tags["mlcp.data.digest"] == digest and tags["mlcp.data.source"] == llm_data["data"]
    assert summary["data_digest"] == digest
    for stage, context in (("train", "training"), ("evaluate", "evaluation")):
        run = stage_run(client, model, stage)
        inputs = {
            next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset
            for i in run.inputs.dataset_inputs
        }
        assert inputs[context].digest == digest and llm_data["data"] in inputs[context].source
    train_run = stage_run(client, model, "train")
    assert {"train_loss", "eval_loss", "eval_perplexity"} <= set(train_run.data.metrics)
    assert len(client.get_metric_history(train_run.info.run_id, "eval_loss")) == 13  # 0..12
    # the judge's instructions: artifact, sha256 tag, registry; found by their hash
    evaluation = stage_run(client, model, "evaluate")
    sha = prompts.sha256(judge.INSTRUCTIONS)
    assert evaluation.data.tags["mlcp.prompt.llm-judge.sha256"] == sha
    assert summary["judge_prompt_sha256"] == sha
    assert evaluation.info.run_id in {r.info.run_id for r in prompts.find_runs(client, sha)}
    artifacts = {a.path for a in client.list_artifacts(evaluation.info.run_id, "eval")}
    assert "eval/results.json" in artifacts
    # no champion: the challenger and the base answered, 60 x 2 answers + 120 judgements
    assert_traced(client, model, evaluation, results_of(client, evaluation), sha, {"": "1"})
    metrics = evaluation.data.metrics
    assert {"correct_rate", "partial_rate", "wrong_rate", "refusal_rate"} <= set(metrics)
    assert metrics["base_correct_rate"] == summary["base_correct_rate"]
    # vLLM's live slot serves v1's adapter, and answers as the staged slot (also v1) does
    adapters = vllm_server.adapters()
    assert adapters[live]["path"].endswith(f"/{model}/1")
    assert adapters[live]["parent"] == llm_data["base_name"]
    first = answers(vllm_server, live)
    assert first == answers(vllm_server, f"{model}-staged")
    # a streamed completion (the openai client's stream) says what the plain one says
    pieces = list(vllm_server.stream(live, PROBES[0], 8))
    assert len(pieces) > 1 and "".join(pieces) == first[0]
    # the deploy's smoke completion is a trace of the deploy run, with its slot and version
    deploy_run = stage_run(client, model, "deploy")
    (smoke,) = search_traces(deploy_run)
    assert {k: smoke.info.tags[k] for k in ("mlcp.call", "mlcp.slot", "mlcp.version")} == {
        "mlcp.call": "smoke",
        "mlcp.slot": f"{model}-staged",
        "mlcp.version": "1",
    }
    assert [s.name for s in smoke.data.spans] == ["smoke", "Completions"]  # autologged
    assert vllm_server.complete(live, "repeat: red blue green\nanswer:", 8, stop=["\n"]) != ""
    # a second training and promotion: v2 live, v1 previous, vLLM follows
    summary = run_chain(mlcp, model, seed="1")
    assert (summary["live"], summary["previous"]) == ("2", "1")
    assert vllm_server.adapters()[live]["path"].endswith(f"/{model}/2")
    second = answers(vllm_server, live)
    assert second != first
    # the retrain (same recipe, another seed) was judged side by side with v1, then live:
    # the paired correct-rate interval and both perf ratios, recorded on its decision runs
    found = decisions(client, model, "2")
    assert all(run.data.tags["mlcp.verdict"] == "pass" for run in found.values())
    compared = found["correct-rate-vs-champion"]
    line = compared.data.tags["mlcp.comparison"]
    assert line.startswith("v2 vs live v1 on 60 samples: correct_rate difference")
    assert compared.data.params["test"] == paired.MCNEMAR
    assert (compared.data.params["champion_version"], compared.data.params["margin"]) == (
        "1",
        "0.1",
    )
    numbers = compared.data.metrics
    assert numbers["value"] == numbers["ci_low"] >= -0.1
    assert numbers["ci_low"] <= numbers["estimate"] <= numbers["ci_high"]
    assert 0 < numbers["p_value"] <= 1 and numbers["n"] == 60
    assert sum(numbers[f"count_{k}"] for k in COUNTS) == 60
    evaluation = stage_run(client, model, "evaluate")
    rows = results_of(client, evaluation)
    assert {"answer", "grade", "champion_answer", "champion_grade", "base_grade"} <= set(rows[0])
    both = sum(r["grade"] == r["champion_grade"] == "correct" for r in rows)
    assert both == numbers["count_both_right"]
    # every completion and every judgement of that evaluation is a trace linked to its run:
    # 60 samples x 3 answering slots (challenger, champion, base) + as many judge calls
    assert_traced(client, model, evaluation, rows, sha, {"": "2", "champion_": "1"})
    # `mlcp traces` lists the same answers from the command line
    wrong = {
        (r["id"], slot) for r in rows for slot, side in sides(model) if r[f"{side}grade"] == "wrong"
    }
    listed = mlcp("traces", f"{model}@evaluated", "--grade", "wrong", "--judge-prompt", sha[:12])
    assert listed.code == 0, listed.err
    assert listed.out.startswith(f"{model}@evaluated = v2: {len(wrong)} traced answers of run ")
    shown = {tuple(line.split()[:2]) for line in listed.out.splitlines()[3:-1]}
    assert shown == wrong and all(" wrong " in line for line in listed.out.splitlines()[3:-1])
    assert "/traces (search: tags.`mlcp.call` = 'answer' AND tags.`mlcp.grade` = 'wrong'" in (
        listed.out
    )
    # the trace search `make demo-llm` prints, on this model (the demo's own, by its name)
    demo = demo_traces_command(model)
    assert demo[:2] == ["traces", f"{model}@live"]
    shown = mlcp(*demo)
    assert shown.code == 0, shown.err
    assert shown.out.startswith(f"{model}@live = v2: {len(wrong)} traced answers")
    assert f"in the MLflow UI: {os.environ['MLFLOW_TRACKING_URI']}/#/experiments/" in shown.out
    other = mlcp("traces", f"{model}@evaluated", "--judge-prompt", "0" * 64, "--json")
    assert other.code == 0 and json.loads(other.out)["traces"] == []
    bad = mlcp("traces", f"{model}@evaluated", "--judge-prompt", "not-a-sha")
    assert bad.code == 2 and "--judge-prompt must be a sha256" in bad.err
    for gate, test in (
        ("ttft-p95-vs-champion", paired.RATIO),
        ("tokens-per-second-vs-champion", paired.PAIRED_RATIO),
    ):
        ratio = found[gate]
        assert ratio.data.params["test"] == test and "mlcp.comparison" in ratio.data.tags
        low, high = ratio.data.metrics["ci_low"], ratio.data.metrics["ci_high"]
        assert 0 < low <= ratio.data.metrics["estimate"] <= high
        # the judged end: a slower TTFT is refused on the lower end, a lower throughput on
        # the upper end (only what the whole interval shows)
        judged = low if gate == "ttft-p95-vs-champion" else high
        assert ratio.data.metrics["value"] == judged
    for gate in sorted(CHAMPION_GATES):  # the figures, for a person reading the log (-rP)
        print(f"v2 {gate}: {found[gate].data.tags['mlcp.comparison']}")
    slots = stats_of(client, stage_run(client, model, "perf-test"))["slots"]
    assert set(slots) == {f"{model}-staged", live}
    assert all(side["requests"] > 0 for side in slots.values())
    # an adapter trained for one epoch instead of twelve: it passes the absolute gates
    # (opened wide here) but the paired gate refuses it (exit 3), recording why; only the
    # staged alias (its deploy) moves. 20 prompts are plenty for a gap this wide.
    weak = mlcp("llm", "train", "--model-name", model, "--seed", "2", *TRAIN, timeout=300)
    assert weak.code == 0, weak.err[-2000:]
    assert mlcp("llm", "deploy", "--model-name", model, timeout=300).code == 0
    before = moves.history(client, model)
    refused = mlcp(
        "llm",
        "evaluate",
        "--model-name",
        model,
        *("--limit", "20", "--min-correct", "0", "--max-refusal", "1", "--min-gain", "-1"),
        timeout=300,
    )
    assert refused.code == 3, refused.err[-3000:]
    assert "gate correct-rate-vs-champion: fail" in refused.err
    assert models.aliases(model) == {
        "candidate": "3",
        "staged": "3",
        "evaluated": "2",
        "benchmarked": "2",
        "live": "2",
        "previous": "1",
    }
    assert moves.history(client, model) == before
    found = decisions(client, model, "3")
    assert found["correct-rate-vs-champion"].data.tags["mlcp.verdict"] == "fail"
    assert {found[g].data.tags["mlcp.verdict"] for g in ("correct-rate", "gain-over-base")} == {
        "pass"
    }
    numbers = found["correct-rate-vs-champion"].data.metrics
    assert numbers["ci_high"] < 0 and numbers["ci_low"] < -0.1 and numbers["p_value"] < 0.01
    assert found["correct-rate-vs-champion"].data.params["champion_version"] == "2"
    weakest = found["correct-rate-vs-champion"].data.tags["mlcp.comparison"]
    print(f"v3 correct-rate-vs-champion: {weakest}")
    # `mlcp lineage` prints the comparison under the gate
    lineage = mlcp("lineage", f"{model}@staged")
    assert lineage.code == 0, lineage.err
    assert "correct-rate-vs-champion: fail" in lineage.out
    assert weakest in lineage.out
    # faults of the serving plane: vLLM down when the rollback runs is exit 1 (Argo retries),
    # no alias moves and the slot keeps v2; without vLLM's key it is exit 2 naming the setting
    held = models.aliases(model)
    dead = f"http://127.0.0.1:{free_port()}"
    down = mlcp("rollback", "--model-name", model, env={"MLCP_VLLM_URL": dead})
    assert down.code == 1, down.err[-2000:]
    assert f"vLLM is not reachable at {dead}" in down.err
    # one replica of two down: refused before either changes, naming the replica
    replicas = {vllm.REPLICAS_VAR: f"{vllm_server.url},{dead}"}
    half = mlcp("rollback", "--model-name", model, env=replicas)
    assert half.code == 1, half.err[-2000:]
    assert f"vLLM is not reachable at {dead}" in half.err
    # (another stack folder: mlcp would fill the empty variable from the stack's .mlcp/env)
    keyless = mlcp(
        "rollback", "--model-name", model, env={vllm.API_KEY_VAR: "", "MLCP_HOME": str(tmp_path)}
    )
    assert keyless.code == 2, keyless.err[-2000:]
    assert "HTTP 401" in keyless.err and f"{vllm.API_KEY_VAR} is not set" in keyless.err
    assert models.aliases(model) == held
    assert vllm_server.adapters()[live]["path"].endswith(f"/{model}/2")
    # rollback, the same command with the server up: the registry and the traffic go back to v1
    rollback = mlcp("rollback", "--model-name", model)
    assert rollback.code == 0, rollback.err
    assert models.aliases(model)["live"] == "1" and "previous" not in models.aliases(model)
    assert vllm_server.adapters()[live]["path"].endswith(f"/{model}/1")
    assert answers(vllm_server, live) == first
    assert client.get_model_version(model, "2").tags["mlcp.rolled_back"] == "true"
    # a no-op promotion re-syncs a slot that drifted (a server restart, a load by hand)
    vllm_server.load_adapter(live, vllm_server.adapters()[f"{model}-staged"]["path"])
    # meanwhile the champion cannot be measured through it: evaluate says so, moves nothing
    before = moves.history(client, model)
    drifted = mlcp("llm", "evaluate", "--model-name", model, "--limit", "2")
    assert drifted.code == 1, drifted.err[-2000:]
    assert f"vLLM slot {live} serves " in drifted.err
    assert f"/{model}/3 (v3), not v1: {model}@live names v1" in drifted.err
    assert models.aliases(model)["evaluated"] == "2" and moves.history(client, model) == before
    models.set_alias(model, "pinned", "1")
    resync = mlcp(
        "promote", "--model-name", model, "--source-alias", "pinned", "--target-alias", "live"
    )
    assert resync.code == 0, resync.err
    assert "already v1 (no-op)" in resync.out
    assert vllm_server.adapters()[live]["path"].endswith(f"/{model}/1")
    assert answers(vllm_server, live) == first
    # the manifest on the adapter volume records what each slot must serve
    recorded = vllm.recorded_slots(Path(os.environ["MLCP_VLLM_ADAPTER_DIR"]))
    assert recorded[live]["version"] == "1" and recorded[f"{model}-staged"]["version"] == "3"
    restart_vllm_as_a_crash_would(stack_env["home"], vllm_server)
    # nobody acts, and both slots serve what the registry names: the launcher loaded the
    # manifest before the stack saw the server ready. Without that loading vLLM comes back
    # with no adapter at all: served() would say None and the completions would answer 404.
    assert VLLM_BACKEND.served(model, live) == [Served(vllm_server.url, "1")]
    assert VLLM_BACKEND.served(model, f"{model}-staged") == [Served(vllm_server.url, "3")]
    assert answers(vllm_server, live) == first
    check = mlcp("serving", "check", "--model-name", model)
    assert check.code == 0, check.out + check.err[-2000:]


def restart_vllm_as_a_crash_would(home: Path, server: vllm.VLLM) -> None:
    """Kill vLLM (its launcher, the server and the engine: the whole process group) and start
    it again as the stack does, on the same port; returns once the stack says it is ready.
    Without the stack's `serving sync` after the start: what serves then is the launcher's
    doing alone."""
    (row,) = [r for r in stack.status(home) if r["service"] == "vllm"]
    os.killpg(int(row["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not stack.port_free(int(server.url.rsplit(":", 1)[1])):
        assert time.monotonic() < deadline, "the killed vLLM still holds its port"
        time.sleep(0.2)
    with pytest.raises(MlcpError, match="not reachable"):
        server.adapters()  # really down
    started = time.monotonic()
    port = int(server.url.rsplit(":", 1)[1])
    values = stack.up(home, ports={"vllm": port}, services=["vllm"], sync=False)
    assert values["MLCP_VLLM_URL"] == server.url
    print(f"vLLM restarted and ready in {time.monotonic() - started:.1f} s")


# The judge's full rubric does not fit the tiny base's 256-token context (vLLM answers 400,
# "maximum context length is 256 tokens"): the real-server test grades with this short one.
SHORT_RUBRIC = "Grade the answer against the reference: correct, partial, wrong or refusal."


def test_vllm_adapter_endpoints_need_the_key_and_health_does_not(vllm_server, monkeypatch):
    # given the stack's vLLM, started with the API key it keeps (.mlcp/env: MLCP_VLLM_API_KEY)
    import urllib.error
    import urllib.request

    def status(method: str, path: str, body: dict | None = None, key: str | None = None):
        request = urllib.request.Request(
            vllm_server.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {key}"} if key else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    folder = os.environ["MLCP_VLLM_ADAPTER_DIR"]
    load = {"lora_name": unique("intruder"), "lora_path": folder, "load_inplace": True}
    # a plain load without the key (or with another) is refused before it is even read
    assert status("POST", "/v1/load_lora_adapter", load) == 401
    assert status("POST", "/v1/load_lora_adapter", load, key="guessed") == 401
    assert status("POST", "/v1/unload_lora_adapter", {"lora_name": "x"}) == 401
    # SageMaker's adapter route, which vLLM's key does not guard, is closed by the launcher
    sagemaker = {"name": unique("intruder"), "src": folder}
    assert status("POST", "/adapters", sagemaker, key=os.environ[vllm.API_KEY_VAR]) == 403
    assert status("DELETE", "/adapters/anything") == 403
    # health stays open (probes and load balancers); with the key /v1 answers
    assert status("GET", "/health") == 200
    assert status("GET", "/v1/models", key=os.environ[vllm.API_KEY_VAR]) == 200
    assert load["lora_name"] not in vllm_server.adapters()
    # the stack started it with the key's file alone (the launcher read it, as in the
    # cluster): the steps read it from a file too
    key_file = stack.vllm_api_key_file(Path(os.environ["MLCP_HOME"]))
    assert key_file.stat().st_mode & 0o777 == 0o600
    monkeypatch.delenv(vllm.API_KEY_VAR)
    monkeypatch.setenv(vllm.API_KEY_VAR + "_FILE", str(key_file))
    assert load["lora_name"] not in vllm.VLLM(vllm_server.url).adapters()
    monkeypatch.delenv(vllm.API_KEY_VAR + "_FILE")
    # mlcp without the key: refused, and the message names the setting
    with pytest.raises(BadInput, match=f"HTTP 401.*{vllm.API_KEY_VAR} is not set"):
        vllm.VLLM(vllm_server.url).adapters()
    with pytest.raises(BadInput, match=f"HTTP 401.*{vllm.API_KEY_VAR} is not set"):
        vllm.VLLM(vllm_server.url).complete(llmdata.BASE_NAME, "red", 2)


def test_replicas_come_from_one_variable(monkeypatch):
    monkeypatch.setenv("MLCP_VLLM_URL", "http://127.0.0.1:8100")
    monkeypatch.delenv(vllm.REPLICAS_VAR, raising=False)
    assert vllm.replica_urls() == ["http://127.0.0.1:8100"]  # unset: the one server
    monkeypatch.setenv(vllm.REPLICAS_VAR, " 127.0.0.1:1, http://127.0.0.1:2/ ,127.0.0.1:1")
    assert vllm.replica_urls() == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert vllm.replica_urls("http://10.0.0.9:8000") == ["http://10.0.0.9:8000"]  # named one
    monkeypatch.setenv(vllm.REPLICAS_VAR, "localhost:7")  # 127.0.0.1 and ::1: one server
    assert len(vllm.replica_urls()) == 1
    # a name resolving to several addresses (a headless Service) stands for each; there is no
    # DNS server here that serves such a name, so the resolver's answer is given
    import socket

    answer = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 8000)) for a in ("10.1.0.7", "10.1.0.5")
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answer)
    monkeypatch.setenv(vllm.REPLICAS_VAR, "http://mlcp-vllm-replicas.mlops.svc:8000")
    assert vllm.replica_urls() == ["http://10.1.0.5:8000", "http://10.1.0.7:8000"]
    monkeypatch.setenv(vllm.REPLICAS_VAR, "ftp://x")
    with pytest.raises(BadInput, match="not an http"):
        vllm.replica_urls()


def test_the_manifest_keeps_every_writers_slot(tmp_path):
    # given eight processes, each recording its own slot in one manifest at the same time
    import subprocess
    import sys

    code = (
        "import sys; from steps.serving import vllm_launch as m; "
        "name = sys.argv[2]; "
        "[m.update_manifest(sys.argv[1], {f'{name}-live': {'path': f'/a/{name}/{i}'}}) "
        "for i in range(1, 21)]"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path), f"m{n}"], cwd=ROOT)
        for n in range(8)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0] * 8
    # then no write was lost, each slot holds its last value, and no temporary file is left
    slots = vllm.recorded_slots(tmp_path)
    assert slots == {f"m{n}-live": {"path": f"/a/m{n}/20"} for n in range(8)}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".manifest.lock", "manifest.json"]
    # and the launcher reads the same format (standard library only, without the steps)
    out = subprocess.run(
        [sys.executable, "-I", str(vllm.LAUNCHER), "--probe", "--ready-file", str(tmp_path / "no")],
        capture_output=True,
    )
    assert out.returncode == 1  # not ready: no ready file


def test_openai_judge_grades_through_a_real_openai_compatible_server(client, vllm_server):
    """The openai judge's happy path against the session's real vLLM (OpenAI-compatible, with
    vLLM's structured outputs holding the reply to the grades): what is tested is the client
    path (request, constrained reply, parsing, tracing), not the tiny base's judgement."""
    import mlflow

    from steps.records import tracking
    from steps.registry import traces

    # given the judge pointed at vLLM's base (with vLLM's key, as any client of it needs),
    # with a rubric that fits its context
    grader = judge.OpenAIJudge(
        f"{vllm_server.url}/v1",
        llmdata.BASE_NAME,
        instructions=SHORT_RUBRIC,
        api_key=os.environ[vllm.API_KEY_VAR],
    )
    answers_ = ("red blue green", "green blue red", "moon")
    experiment = tracking.ensure_experiment(client, unique("tests/openai-judge"))
    traces.autolog()
    try:
        # when it grades three answers twice, in a run
        with mlflow.start_run(experiment_id=experiment) as run:
            graded = [
                [grader.grade("repeat: red blue green", "red blue green", a) for a in answers_]
                for _ in range(2)
            ]
        traces.flush()
    finally:
        mlflow.openai.autolog(disable=True)
    # then every reply is a grade, the same both times (temperature 0)
    assert all(g in judge.GRADES for g in graded[0]) and graded[0] == graded[1]
    # and each call is a trace of the run: the autologged chat completion, rubric first
    found = search_traces(run)
    assert len(found) == 6
    for trace in found:
        (span,) = trace.data.spans
        assert span.span_type == "CHAT_MODEL"
        assert span.inputs["messages"][0] == {"role": "system", "content": SHORT_RUBRIC}
        assert span.inputs["extra_body"] == {"structured_outputs": {"choice": list(judge.GRADES)}}
        assert span.outputs["choices"][0]["message"]["content"] in judge.GRADES


class FakeJudge(http.server.BaseHTTPRequestHandler):
    """A stand-in for an external OpenAI-compatible judge that ignores the requested label
    constraint and chats instead (a fake of an external service, not of anything of ours)."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (the http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.requests.append({"path": self.path, "body": body})
        reply = {"choices": [{"message": {"role": "assistant", "content": "Sure, looks fine!"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_bad_inputs_are_answered_clearly_and_move_nothing(
    mlcp, models, client, llm_data, vllm_server, stack_env, tmp_path
):
    import boto3

    from steps.local import stack
    from steps.registry import moves

    bucket = stack_env["MLCP_BUCKET"]
    s3 = boto3.client("s3")
    # malformed JSONL: refused with the line number, nothing registered
    lines = llmdata.build_instructions().decode().splitlines()
    lines[2] = '{"split": "train", "prompt": "repeat: red", "response": '
    s3.put_object(Bucket=bucket, Key="bad/broken.jsonl", Body="\n".join(lines).encode())
    model = unique("tinyllm-bad")
    broken = mlcp(
        "llm", "train", "--model-name", model, "--data", f"s3://{bucket}/bad/broken.jsonl"
    )
    assert broken.code == 2 and "line 3: not valid JSON" in broken.err, broken.err[-2000:]
    lines[2] = '{"split": "test", "prompt": "repeat: red", "response": "red"}'
    s3.put_object(Bucket=bucket, Key="bad/split.jsonl", Body="\n".join(lines).encode())
    split = mlcp("llm", "train", "--model-name", model, "--data", f"s3://{bucket}/bad/split.jsonl")
    assert split.code == 2 and "line 3: split 'test'" in split.err
    assert client.search_registered_models(f"name = '{model}'") == []

    # an adapter made for another base (same name, hidden size 64): vLLM would load it and
    # answer garbage, so deploy refuses it before anything is placed or loaded
    other = llmdata.build_base_folder(tmp_path / "other-base", hidden_size=64)
    misfit = mlcp(
        "llm", "train", "--model-name", model, "--base-model", str(other), *TRAIN, timeout=300
    )
    assert misfit.code == 0, misfit.err[-2000:]
    assert client.get_model_version(model, "1").tags["mlcp.hidden_size"] == "64"
    before = moves.history(client, model)
    refused = mlcp("llm", "deploy", "--model-name", model, timeout=300)
    assert refused.code == 2, refused.err[-2000:]
    assert "made for hidden size 64, the served base has 128" in refused.err
    assert models.aliases(model) == {"candidate": "1"}
    assert moves.history(client, model) == before
    assert f"{model}-staged" not in vllm_server.adapters()

    # vLLM not reachable: exit 1, saying where it looked
    good = unique("tinyllm-judge")
    trained = mlcp("llm", "train", "--model-name", good, *TRAIN, timeout=300)
    assert trained.code == 0, trained.err[-2000:]
    port = stack.free_port()
    down = mlcp("llm", "deploy", "--model-name", good, "--vllm-url", f"http://127.0.0.1:{port}")
    assert down.code == 1 and f"vLLM is not reachable at http://127.0.0.1:{port}" in down.err
    assert models.aliases(good) == {"candidate": "1"}

    # a judge whose reply is not a grade: the evaluation fails clearly, nothing moves
    assert mlcp("llm", "deploy", "--model-name", good, timeout=300).code == 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judged = mlcp(
            "llm",
            "evaluate",
            "--model-name",
            good,
            "--judge",
            "openai",
            "--judge-url",
            f"http://127.0.0.1:{server.server_address[1]}/v1",
            "--judge-model",
            "judge-llm",
            timeout=300,
        )
    finally:
        server.shutdown()
    assert judged.code == 1, judged.err[-2000:]
    assert "replied 'Sure, looks fine!', which is not a grade" in judged.err
    asked = FakeJudge.requests[0]
    assert asked["path"] == "/v1/chat/completions"
    assert asked["body"]["structured_outputs"] == {"choice": list(judge.GRADES)}
    assert asked["body"]["messages"][0]["content"] == judge.INSTRUCTIONS
    assert models.aliases(good) == {"candidate": "1", "staged": "1"}
    # unknown judge and bad thresholds are bad input
    unknown = mlcp("llm", "evaluate", "--model-name", good, "--judge", "oracle")
    assert unknown.code == 2 and "unknown judge 'oracle'" in unknown.err
    rank = mlcp("llm", "train", "--model-name", good, "--rank", "0")
    assert rank.code == 2 and "--rank" in rank.err


# ------------------------------------------------------------------ without servers (fast)


def parse_text(text: str):
    import hashlib

    from steps.records.lineage import DataRead

    raw = text.encode()
    return llmdata.parse(DataRead("s3://b/i.jsonl", raw, hashlib.sha256(raw).hexdigest()))


def test_instructions_are_fixed_split_and_disjoint():
    raw = llmdata.build_instructions(seed=0)
    assert raw == llmdata.build_instructions(seed=0) != llmdata.build_instructions(seed=1)
    parsed = parse_text(raw.decode())
    assert {s: len(v) for s, v in parsed.samples.items()} == llmdata.SIZES
    prompts_of = {s: {x.prompt.split(": ")[1] for x in v} for s, v in parsed.samples.items()}
    assert not prompts_of["eval"] & prompts_of["train"]  # no eval triple is trained on
    first = {x.prompt.split(":")[0] for x in parsed.samples["eval"]}
    assert first == set(llmdata.TASKS)
    sample = next(x for x in parsed.samples["train"] if x.prompt.startswith("last: "))
    assert sample.response == sample.prompt.split()[-1]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"split": "train", "prompt": "x"', "line 2: not valid JSON"),
        ('["a", "b"]', "line 2: expected a JSON object, got list"),
        ('{"split": "train", "prompt": "x"}', "line 2: 'response' is missing"),
        ('{"split": "dev", "prompt": "x", "response": "y"}', "line 2: split 'dev' is not"),
        ('{"split": "train", "prompt": " ", "response": "y"}', "line 2: 'prompt' is empty"),
    ],
)
def test_malformed_jsonl_is_refused_with_its_line_number(line, message):
    from steps.base.errors import BadInput

    good = '{"split": "eval", "prompt": "first: a b", "response": "a"}'
    with pytest.raises(BadInput, match=message):
        parse_text(f"{good}\n{line}\n{good}\n")
    with pytest.raises(BadInput, match="no train / val samples"):
        parse_text(good + "\n")


def test_reference_judge_follows_its_rubric():
    grade = judge.reference_grade
    assert grade(" Red blue green.", "red blue green") == "correct"
    assert grade("green blue red", "red blue green") == "partial"  # right words, other order
    assert grade("red lamp door", "red blue green") == "partial"  # some words in place
    assert grade("moon star", "moon") == "partial"  # the reference with extra words
    assert grade("fish tree", "red blue green") == "wrong"
    assert grade("", "red") == grade("Sorry, I cannot answer that", "red") == "refusal"
    assert judge.parse_grade(" Partial.\n", "x") == "partial"
    with pytest.raises(Exception, match="not a grade"):
        judge.parse_grade("I think it is right", "http://judge")


def test_check_fits_names_every_misfit():
    base = vllm.BaseInfo("mlcp-tiny-llama", "/nowhere", 256)
    tags = {"mlcp.base_model": "mlcp-tiny-llama", "mlcp.hidden_size": "128"}
    assert vllm.check_fits(tags, base, 128) == []
    other = {"mlcp.base_model": "llama-7b", "mlcp.hidden_size": "4096"}
    problems = vllm.check_fits(other, base, 128)
    assert "trained on base 'llama-7b', the server serves 'mlcp-tiny-llama'" in problems[0]
    assert "made for hidden size 4096, the served base has 128" in problems[1]
    assert "hidden size is unknown" in vllm.check_fits(tags, base, None)[0]


def _server_command(tmp_path, **key):
    return vllm.server_command(
        tmp_path,
        8123,
        "/models/base",
        "base-name",
        adapter_dir=tmp_path / "adapters",
        ready_file=tmp_path / "ready",
        **key,
    )


def test_server_command_follows_the_recipe(tmp_path):
    argv, env = _server_command(tmp_path, api_key="k3y")
    # the launcher (standard library only, one file) starts vLLM, then loads the manifest
    assert argv[:2] == [str(tmp_path / "envs" / "vllm" / "bin" / "python"), str(vllm.LAUNCHER)]
    assert argv[2 : argv.index("--")] == [
        *("--manifest", str(tmp_path / "adapters" / "manifest.json")),
        *("--ready-file", str(tmp_path / "ready")),
    ]
    assert "k3y" not in argv and env["VLLM_API_KEY"] == "k3y"  # not visible in `ps`
    # or the key's file, which the launcher reads (the stack's mode-600 file, the chart's
    # mounted Secret): then no key is in the launcher's environment at all
    key_file = tmp_path / "api-key"
    _, from_file = _server_command(tmp_path, api_key_file=key_file)
    assert from_file["VLLM_API_KEY_FILE"] == str(key_file) and "VLLM_API_KEY" not in from_file
    joined = " ".join(argv)
    for flag in (
        "--model /models/base",
        "--served-model-name base-name",
        "--host 127.0.0.1",
        "--port 8123",
        "--enable-lora",
        "--max-lora-rank 8",
        "--max-loras 2",
        "--dtype float32",
        "--max-model-len 256",
    ):
        assert flag in joined
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_traces_say_which_slot_answered_and_lead_with_the_versions_own_answers():
    from steps.registry import traces

    def row(sample, slot, version):
        return {
            "trace_id": f"tr-{sample}-{slot}",
            "sample_id": sample,
            "slot": slot,
            "version": version,
            "grade": "wrong",
            "judge_prompt_sha256": "",
            "answer": "blue",
        }

    # given the wrong answers of v2's evaluation: the base's listed first by the search,
    # then the champion's, then one of v2's own
    found = {
        "model": "m",
        "alias": "live",
        "version": "2",
        "run_id": "r1",
        "run_name": "m-evaluate",
        "experiment_id": "7",
        "filter": "tags.`mlcp.grade` = 'wrong'",
        "traces": [
            row("eval-1", llmdata.BASE_NAME, "none"),
            row("eval-2", llmdata.BASE_NAME, "none"),
            row("eval-1", "m-live", "1"),
            row("eval-3", "m-staged", "2"),
        ],
    }
    out = traces.lines(found, "http://mlflow")
    # then the header counts each slot's answers, the version's own first
    assert out[0] == (
        "m@live = v2: 4 traced answers of run m-evaluate (r1): 1 by v2 itself (m-staged), "
        f"1 by the champion v1 (m-live), 2 by the bare base ({llmdata.BASE_NAME})"
    )
    # and the answers follow in that order
    assert [line.split()[:2] for line in out[3:-1]] == [
        ["eval-3", "m-staged"],
        ["eval-1", "m-live"],
        ["eval-1", llmdata.BASE_NAME],
        ["eval-2", llmdata.BASE_NAME],
    ]
    # given none of the version's own answers among them: the header says 0, first
    found["traces"] = found["traces"][:2]
    assert traces.lines(found, "http://mlflow")[0].endswith(
        f"2 traced answers of run m-evaluate (r1): 0 by v2 itself, "
        f"2 by the bare base ({llmdata.BASE_NAME})"
    )
