"""Triton converges on the registry: two replicas, restarts, faults and the control key.

Its own small stack (Triton only, ``stack.up(..., triton_replicas=2)``: two real
``tritonserver`` processes on one model repository, started with the control key), next to
the session's MLflow and S3: restarting it leaves the session's Triton (and its many slots)
alone. Real ``mlcp promote`` / ``rollback`` processes drive it; replicas are stopped and
started as processes, nothing is faked.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from steps.base.errors import BadInput, MlcpError
from steps.local import stack
from steps.serving import triton

from . import switching
from .conftest import run_mlcp, unique
from .test_triton import SIZE

START_S = 60.0  # a Triton replica's start, loading the slots it declares, on a busy machine


@pytest.fixture(scope="module")
def replicated(stack_env, tmp_path_factory):
    """A Triton-only stack with two replicas; its environment (the steps' variables)."""
    home = tmp_path_factory.mktemp("triton-replicas")
    (home / "envs").mkdir()
    (home / "envs" / "triton").symlink_to(stack_env["home"] / "envs" / "triton")
    values = stack.up(
        home, services=["triton"], ports={"triton": stack.free_port()}, triton_replicas=2
    )
    try:
        yield {**values, "home": home}
    finally:
        stack.down(home)


@pytest.fixture
def on_replicas(replicated, monkeypatch):
    """This process pointed at the two-replica stack, as the steps would be."""
    for key, value in replicated.items():
        if key.startswith("MLCP_TRITON"):
            monkeypatch.setenv(key, value)
    return replicated


def mlcp_on(replicated, *args: str, drop: tuple[str, ...] = ()):
    env = {k: v for k, v in replicated.items() if k.startswith("MLCP_TRITON")}
    if drop:  # run_mlcp merges os.environ: an empty value stands for unset, and a stack
        # folder without an env file keeps mlcp from reading the variable from one
        env.update(dict.fromkeys(drop, ""))
        env["MLCP_HOME"] = str(replicated["home"] / "no-env")
    return run_mlcp(*args, env=env, timeout=300)


def replica_urls(replicated) -> list[str]:
    return [
        f"http://{entry.partition('/')[0]}" for entry in replicated[triton.REPLICAS_ENV].split(",")
    ]


def replica_services(home: Path) -> dict[str, stack.Service]:
    return {n: s for n, s in stack._load_state(home).items() if n.startswith("triton")}


def answers(url: str, slot: str) -> str:
    x = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    return triton.Triton(url).infer(slot, x)[1]


def wait_answers(url: str, slot: str, timeout: float = START_S) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return answers(url, slot)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="module")
def model(replicated, client, tmp_path_factory):
    """A Triton-served model with three registered ONNX versions (tiny nets, nothing
    trained); ``benchmarked`` names v1."""
    name = unique("replicas-cv")
    switching.register_onnx_versions(
        client, tmp_path_factory.mktemp("replicas-onnx"), name, seeds=(1, 2, 3)
    )
    client.set_registered_model_alias(name, "benchmarked", "1")
    return name


def promote(replicated, name: str, version: str, drop: tuple[str, ...] = ()):
    """``mlcp promote benchmarked -> live`` (its own process, as Argo runs it)."""
    from steps.spec.contract import BENCHMARKED

    return mlcp_on(
        replicated,
        "promote",
        "--model-name",
        name,
        "--source-alias",
        BENCHMARKED,
        "--target-alias",
        "live",
        "--reason",
        f"replicas test: v{version}",
        drop=drop,
    )


def test_promote_and_rollback_switch_every_replica_and_pin_the_slot(
    replicated, on_replicas, model, client
):
    slot = f"{model}-live"
    repository = replicated["MLCP_TRITON_REPOSITORY"]
    urls = replica_urls(replicated)
    assert len(urls) == 2 and replicated["MLCP_TRITON_URL"] == urls[0]
    rows = {row["service"]: row for row in stack.status(replicated["home"])}
    assert rows["triton"]["state"] == rows["triton-2"]["state"] == "running"
    assert [rows["triton"]["url"], rows["triton-2"]["url"]] == urls
    # when v1 and then v2 are promoted (the CLI, its own process)
    for version in ("1", "2"):
        client.set_registered_model_alias(model, "benchmarked", version)
        done = promote(replicated, model, version)
        assert done.code == 0, done.err[-3000:]
        # then both replicas answer as the version live names, and the slot's pin names it
        assert [answers(url, slot) for url in urls] == [version, version]
        assert triton.pinned(repository, slot) == version
    # when rolled back, both replicas serve v1 again and the pin follows
    done = mlcp_on(replicated, "rollback", "--model-name", model, "--reason", "replicas test")
    assert done.code == 0, done.err[-3000:]
    assert [answers(url, slot) for url in urls] == ["1", "1"]
    assert triton.pinned(repository, slot) == "1"
    assert client.get_registered_model(model).aliases["live"] == "1"
    served = triton.Fleet().served(slot)
    assert [(s.replica, s.version, s.error) for s in served] == [(u, "1", None) for u in urls]


def test_a_replica_down_refuses_the_promotion_naming_it(replicated, on_replicas, model, client):
    home = replicated["home"]
    urls = replica_urls(replicated)
    live = client.get_registered_model(model).aliases.get("live")
    assert live, "the switching test runs first and leaves a live version"
    other = "3" if live != "3" else "2"
    client.set_registered_model_alias(model, "benchmarked", other)
    # given the second replica stopped
    stack._kill(replica_services(home)["triton-2"])
    try:
        # when a promotion runs
        refused = promote(replicated, model, other)
        # then it exits 1 naming the replica, no alias moved, the pin unchanged
        assert refused.code == 1, refused.err[-3000:]
        assert urls[1] in refused.err and "did not load" in refused.err
        assert client.get_registered_model(model).aliases["live"] == live
        assert triton.pinned(replicated["MLCP_TRITON_REPOSITORY"], f"{model}-live") == live
        served = triton.Fleet().served(f"{model}-live")
        assert served[0].version is not None and served[1].error and not served[1].version
    finally:
        # when the replica is back (the stack restarts it on its port) ...
        again = stack.up(home, services=["triton"])
    assert again[triton.REPLICAS_ENV] == replicated[triton.REPLICAS_ENV]
    # ... it serves the pinned live version by itself, and the same command succeeds
    assert wait_answers(urls[1], f"{model}-live") == live
    done = promote(replicated, model, other)
    assert done.code == 0, done.err[-3000:]
    assert [answers(url, f"{model}-live") for url in urls] == [other, other]
    assert client.get_registered_model(model).aliases["live"] == other


def test_triton_down_fails_the_rollback_and_it_succeeds_once_back(
    replicated, on_replicas, model, client
):
    home = replicated["home"]
    before = client.get_registered_model(model).aliases
    # given every replica stopped
    for service in replica_services(home).values():
        stack._kill(service)
    try:
        refused = mlcp_on(replicated, "rollback", "--model-name", model, "--reason", "down")
        # then exit 1 (Argo retries), nothing moved
        assert refused.code == 1, refused.err[-3000:]
        assert "not reachable" in refused.err
        assert client.get_registered_model(model).aliases == before
    finally:
        stack.up(home, services=["triton"])
    done = mlcp_on(replicated, "rollback", "--model-name", model, "--reason", "back")
    assert done.code == 0, done.err[-3000:]
    live = client.get_registered_model(model).aliases["live"]
    assert live == before["previous"]
    assert [answers(u, f"{model}-live") for u in replica_urls(replicated)] == [live, live]


def test_a_restarted_stack_serves_live_with_nothing_run(replicated, on_replicas, model, client):
    """Kill every tritonserver of the stack and start them again: within the start-up time,
    ``<model>-live`` answers on each replica as the version ``live`` names, with no step run,
    and ``mlcp serving check`` agrees.

    Without the start-up loading (``--load-model=*``, explicit control) a restarted Triton
    serves nothing: the control below starts the same command without that one argument on
    the same repository, and the slot is not served there."""
    home = replicated["home"]
    live = client.get_registered_model(model).aliases["live"]
    urls = replica_urls(replicated)
    for service in replica_services(home).values():
        stack._kill(service)
    with pytest.raises(MlcpError, match="not reachable"):
        answers(urls[0], f"{model}-live")
    started = time.monotonic()
    stack.up(home, services=["triton"])  # starts the processes: nothing else runs
    assert [wait_answers(url, f"{model}-live") for url in urls] == [live, live]
    took = time.monotonic() - started
    print(f"two replicas back, serving v{live}, in {took:.1f} s")
    check = mlcp_on(replicated, "serving", "check", "--model-name", model)
    assert check.code == 0, check.out + check.err[-3000:]
    # the control: the same server without --load-model=* serves nothing on that slot
    services = replica_services(home)
    extra = dict(services["triton"].extra, **stack._triton_ports(stack.free_port()))
    port = stack.free_port()
    command = [a for a in stack._triton_command(port, home, extra) if a != "--load-model=*"]
    assert len(command) == len(stack._triton_command(port, home, extra)) - 1
    env = stack.ensure_triton_env(home).process_env()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=home
    )
    try:
        control = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_S
        while not stack._http_ok(control + "/v2/health/live"):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        with pytest.raises(BadInput, match="does not serve"):
            answers(control, f"{model}-live")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_model_control_needs_the_key_and_the_rest_stays_open(
    replicated, on_replicas, model, client, monkeypatch
):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    slot = f"{model}-live"
    url = replicated["MLCP_TRITON_URL"]
    address = url.partition("://")[2]
    grpc_address = replicated["MLCP_TRITON_GRPC_URL"]
    served = answers(url, slot)
    plain = httpclient.InferenceServerClient(address)
    # a plain client without the key: load, unload and the index are refused, over HTTP ...
    for call in (
        lambda: plain.load_model(slot),
        lambda: plain.unload_model(slot),
        lambda: plain.get_model_repository_index(),
    ):
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
    # ... and over gRPC, also with a wrong key
    grpc = grpcclient.InferenceServerClient(grpc_address)
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc.load_model(slot)
    wrong = {triton.GRPC_HEADER_PREFIX + triton.CONTROL_HEADER: "not-the-key"}
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc.load_model(slot, headers=wrong)
    # inference, health and metadata stay open; the slot still serves what it served
    assert plain.is_server_live() and plain.is_model_ready(slot)
    assert plain.get_model_metadata(slot)["name"] == slot
    assert answers(url, slot) == served
    # mlcp sends the key: its load succeeds on both replicas
    fleet = triton.Fleet()
    fleet.load(slot, served)
    assert {s.version for s in fleet.served(slot)} == {served}
    # without the key mlcp says which setting is missing (exit 2 from the CLI)
    monkeypatch.delenv(triton.CONTROL_KEY_ENV)
    with pytest.raises(BadInput, match=triton.CONTROL_KEY_ENV):
        triton.Triton(url).load(slot, served)
    gone = [s.error for s in triton.Fleet().served(slot)]
    assert all(triton.CONTROL_KEY_ENV in (e or "") for e in gone), gone
    live = client.get_registered_model(model).aliases["live"]
    other = "3" if live != "3" else "2"
    client.set_registered_model_alias(model, "benchmarked", other)
    refused = promote(replicated, model, other, drop=(triton.CONTROL_KEY_ENV,))
    assert refused.code == 2, refused.err[-3000:]
    assert f"{triton.CONTROL_KEY_ENV} is not set" in refused.err
    assert client.get_registered_model(model).aliases["live"] == live


def test_the_replicas_variable_is_checked_and_a_name_stands_for_its_addresses(monkeypatch):
    monkeypatch.setenv(triton.REPLICAS_ENV, "localhost:8000/8001, http://127.0.0.2:9000")
    fleet = triton.Fleet()
    assert "http://127.0.0.1:8000" in fleet.urls and fleet.urls[-1] == "http://127.0.0.2:9000"
    first = fleet.members[fleet.urls.index("http://127.0.0.1:8000")][1]
    assert first.grpc_address == "127.0.0.1:8001"
    assert fleet.members[-1][1].grpc_address is None  # no gRPC port: loads over HTTP
    monkeypatch.setenv(triton.REPLICAS_ENV, "no-such-host.invalid:8000")
    (only,) = triton.Fleet().served("slot")
    assert only.error and "unresolved" in only.error and only.version is None
    for bad in ("127.0.0.1", "ftp://h:1", "h:1/x", " , "):
        monkeypatch.setenv(triton.REPLICAS_ENV, bad)
        with pytest.raises(BadInput, match=triton.REPLICAS_ENV):
            triton.Fleet()


def test_a_stack_up_of_other_services_leaves_a_busy_replica_alone(replicated):
    """`stack up --services s3` (as the router or vLLM fixtures start their service on a
    stack that runs Triton) must not stop and restart a Triton replica whose health check
    does not answer: a replica busy loading a model looks exactly like that, and the restart
    would cut the load off ("Stream removed"). The replica is frozen here (SIGSTOP), so its
    health check times out while its process lives."""
    import os
    import signal

    home = replicated["home"]
    second = replica_services(home)["triton-2"]
    os.kill(second.pid, signal.SIGSTOP)
    try:
        assert not stack.healthy(second)
        values = stack.up(home, services=["s3"], ports={"s3": stack.free_port()}, sync=False)
        # then the replica is the same process, still named among the replicas
        assert replica_services(home)["triton-2"].pid == second.pid
        assert values[triton.REPLICAS_ENV] == replicated[triton.REPLICAS_ENV]
    finally:
        os.kill(second.pid, signal.SIGCONT)
    deadline = time.monotonic() + START_S
    while not stack.healthy(second):
        assert time.monotonic() < deadline, "the replica did not answer again"
        time.sleep(0.2)
    # and asking for replicas without Triton among the services is bad input
    with pytest.raises(BadInput, match="--triton-replicas needs the triton service"):
        stack.up(home, services=["s3"], triton_replicas=2)
