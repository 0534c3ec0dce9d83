"""Switching ``<model>-live`` under load drops nothing: Triton and vLLM, real servers.

A few client threads send requests without pause for a few seconds while real
``mlcp promote`` and ``mlcp rollback`` processes switch the live slot twice; every request
must succeed, and the commands must not import ``mlflow``. The figures under a larger load
are the bench's (``make bench``): this test only asserts what must hold on any machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from . import switching
from .conftest import unique
from .test_triton import SIZE

CLIENTS = 3
SETTLE_S = 1.5


@pytest.fixture(scope="module")
def triton_model(stack_env, client, tmp_path_factory):
    """A registered model served by Triton with two versions, each with the ONNX export its
    deploy would have recorded (two tiny nets: nothing is trained), v1 live."""
    from steps import promote

    name = unique("switch-cv")
    switching.register_onnx_versions(
        client, tmp_path_factory.mktemp("switch-onnx"), name, seeds=(1, 2)
    )
    client.set_registered_model_alias(name, "benchmarked", "1")
    promote.promote(name, "benchmarked", "live", reason="switch test: v1 live")
    client.set_registered_model_alias(name, "benchmarked", "2")
    return name


def test_triton_switches_under_load_fail_no_request(triton_model, client):
    from steps.serving import triton

    # given v1 live on Triton and CLIENTS threads inferring without pause
    name, slot = triton_model, f"{triton_model}-live"
    x = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    servers = [triton.Triton() for _ in range(CLIENTS)]
    assert servers[0].infer(slot, x)[1] == "1"
    # when promote puts v2 live and rollback puts v1 back, each its own process
    switches = [
        switching.Switch(
            ("promote", "--model-name", name, "--source-alias", "benchmarked")
            + ("--target-alias", "live", "--reason", "switch test"),
            "2",
        ),
        switching.Switch(("rollback", "--model-name", name, "--reason", "switch test"), "1"),
    ]
    samples = switching.under_load(
        lambda i: servers[i].infer(slot, x)[1], switches, clients=CLIENTS, settle_s=SETTLE_S
    )
    # then both commands succeeded without importing mlflow, every request succeeded, and
    # every client saw each new version before the next switch
    for switch in switches:
        assert switch.code == 0, switch.output[-3000:]
        assert switch.mlflow_modules == [], switch.mlflow_modules[:5]
    found = switching.summary(samples, switches, CLIENTS)
    assert found["failed"] == 0, found["errors"]
    assert found["requests"] > 20 * CLIENTS
    assert all(s < float("inf") for s in found["visible_s"]), found
    assert {s.version for s in samples} == {"1", "2"}
    assert client.get_registered_model(name).aliases["live"] == "1"
    assert servers[0].infer(slot, x)[1] == "1"


PROBES = ("the moon and the", "where is the door ?", "first: red")


@pytest.fixture(scope="module")
def vllm_model(stack_env, llm_data, vllm_server):
    """A registered model served by vLLM with two trained and deployed adapters (the LLM
    pipeline's own train and deploy, few epochs: the switch, not the quality, is tested),
    v1 live and v2 staged, and each version's answers to the probes."""
    from .conftest import run_mlcp

    name = unique("switch-llm")
    answers = {}
    for version, seed in (("1", "0"), ("2", "1")):
        train = run_mlcp(
            "llm", "train", "--model-name", name, "--seed", seed, "--epochs", "4",
            "--max-eval-perplexity", "1000", timeout=600,
        )  # fmt: skip
        assert train.code == 0, train.err[-3000:]
        deploy = run_mlcp("llm", "deploy", "--model-name", name, timeout=600)
        assert deploy.code == 0, deploy.err[-3000:]
        answers[version] = [vllm_server.complete(f"{name}-staged", p, 8) for p in PROBES]
        if version == "1":
            code, loaded, output = switching.watched(
                "promote", "--model-name", name, "--source-alias", "staged",
                "--target-alias", "live", "--force", "--reason", "switch test: v1 live",
            )  # fmt: skip
            assert code == 0, output[-3000:]
            assert loaded == []
    return name, answers


def test_vllm_switches_under_load_fail_no_request(vllm_model, client, vllm_server):
    from steps.serving import vllm

    # given v1 live on vLLM (v2 staged) and CLIENTS threads asking for completions
    name, answers = vllm_model
    slot = f"{name}-live"
    servers = [vllm.VLLM(vllm_server.url) for _ in range(CLIENTS)]

    def ask(index: int) -> str:
        k = index % len(PROBES)
        answer = servers[index].complete(slot, PROBES[k], 8)
        if answers["1"][k] == answers["2"][k]:
            return "1|2"  # this probe does not tell the versions apart
        return {answers["1"][k]: "1", answers["2"][k]: "2"}.get(answer, "other")

    # when promote puts v2 live and rollback puts v1 back, each its own process
    promote_v2 = ("promote", "--model-name", name, "--source-alias", "staged")
    promote_v2 += ("--target-alias", "live", "--force", "--reason", "switch test")
    switches = [
        switching.Switch(promote_v2, "2"),
        switching.Switch(("rollback", "--model-name", name, "--reason", "switch test"), "1"),
    ]
    samples = switching.under_load(ask, switches, clients=CLIENTS, settle_s=SETTLE_S)
    # then both commands succeeded without importing mlflow and every request succeeded
    for switch in switches:
        assert switch.code == 0, switch.output[-3000:]
        assert switch.mlflow_modules == [], switch.mlflow_modules[:5]
    found = switching.summary(samples, switches, CLIENTS)
    assert found["failed"] == 0, found["errors"]
    assert found["requests"] > 5 * CLIENTS
    assert client.get_registered_model(name).aliases["live"] == "1"
    assert vllm_server.adapters()[slot]["path"].endswith(f"/{name}/1")


@pytest.mark.usefixtures("router_stack")
def test_the_router_splits_an_openai_model_by_slot_on_vllm(vllm_model, client, vllm_server):
    """The router reads the model from the OpenAI request's body and rewrites it into the
    slot its weight drew: clients name the model, vLLM answers from either adapter."""
    import json
    import os
    import time
    import urllib.request
    from collections import Counter

    from steps import moves, router
    from steps.contract import live_slot, staged_slot
    from steps.llm.serving import VLLM
    from steps.serving import vllm

    # given v1 live and v2 staged on vLLM, routed at 50% to the staged slot
    name, _ = vllm_model
    route = moves.route_for(name, VLLM, staged_slot(name))
    moves.shift(client, name, route, 50, reason="test", champion="1", challenger="2")
    clusters = [router.cluster_name(name, "canary"), router.cluster_name(name, "live")]
    time.sleep(router.STATS_FLUSH_S * 1.2)
    before = router.cluster_stats(clusters)
    # when a client asks for completions of the model's own name at the router
    seen: Counter = Counter()
    body = json.dumps({"model": name, "prompt": "Say hi", "max_tokens": 1}).encode()
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {os.environ[vllm.API_KEY_VAR]}",
    }
    for _ in range(60):
        request = urllib.request.Request(
            f"{os.environ[router.URL_ENV]}/v1/completions", data=body, headers=headers
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            seen[json.loads(response.read())["model"]] += 1
    time.sleep(router.STATS_FLUSH_S * 1.2)
    after = router.cluster_stats(clusters)
    # then both adapters answered, about half each, and the router counted each slot's
    assert set(seen) == {live_slot(name), staged_slot(name)}, seen
    assert 15 <= seen[staged_slot(name)] <= 45, seen
    canary = after[clusters[0]].minus(before[clusters[0]])
    live = after[clusters[1]].minus(before[clusters[1]])
    assert (canary.completed, live.completed) == (seen[staged_slot(name)], seen[live_slot(name)])
    moves.shift(client, name, route, 0, reason="test", champion="1", challenger="2")
