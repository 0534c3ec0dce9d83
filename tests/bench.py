"""Benchmarks: ``python -m tests.bench`` (``make bench``).

Starts a fresh local stack (MLflow, S3 endpoint, tritonserver) on free ports in a temporary
folder, then measures, in one run:

- the control plane: whole ``mlcp`` processes from start to exit (``--help``, ``rollback``
  with its alias then read back, ``promote``, ``history``), as a person or an Argo step
  runs them; beside the rollback, ``python -c "import mlflow"`` and the bare REST floor
  (``tests/rest_floor.py`` making the same calls a rollback made);
- the CV chain: the wall time of ``mlcp cv chain`` (train -> deploy -> evaluate ->
  perf-test -> promote, each stage its own process);
- Triton against ``mlflow models serve --env-manager local`` of the same registered
  version: requests per second and p95 with the same client threads and image, the ratio;
- Triton: requests per second on the chain's ResNet-18 with dynamic batching and without
  it, same ONNX file, same concurrent clients, and the ratio;
- switches of ``<model>-live`` under a bounded load (``tests/switching.py``), on Triton after
  a second CV chain and on vLLM after the LLM rollback: requests, failed requests, steady
  p50/p99, the worst latency during a switch, each command's time and the time until
  every client sees the new version;
- the router (Envoy joins the stack) in front of Triton, on a model of two tiny nets: the
  throughput and p95 of the same version straight from Triton and through the router (same
  clients); the challenger's observed share of 3,000 requests at weights 5, 25 and 50; a
  whole ``mlcp cv rollout`` (5, 25, 50, 100) under client load: requests, failed requests and
  the worst latency of a request that overlapped each weight change; then ``mlcp rollback``
  by route flip: from its start until every client gets v1, beside the reload path's
  figure of the switches above;
- the tabular pipeline (MLServer joins the stack): the wall time of ``mlcp tabular chain``,
  then the version it put live served by MLServer and by ``mlflow models serve`` (the same
  MLflow model folder), same client threads at one row per request: req/s, p95, the ratio;
- the LLM chain (vLLM joins the stack): the wall time of ``mlcp llm chain``, and, after a
  second chain put v2 live, the time from starting ``mlcp rollback`` until vLLM's
  ``<model>-live`` slot answers from v1's adapter folder with v1's answers.

Prints a table; asserts nothing about time (the machine is shared and noisy; read the
figures, compare ratios within one run). ``--skip-cv`` (Triton, hence the router, too),
``--skip-chains`` (the CV chains and what uses their model), ``--skip-router``,
``--skip-tabular`` and ``--skip-llm`` leave those parts out. The vLLM, router and MLServer
environments are those the tests build once in ``.mlcp/env-cache/`` (``MLCP_ENV_CACHE``),
linked into the bench's stack folder.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steps.local import stack
from steps.registry import promote

from .conftest import ENV_CACHE, ROOT, ModelFactory

TARGETS = {"mlcp --help": 1.0, "mlcp rollback": 1.0, "mlcp cv chain (wall)": 180.0}
PROBES = ("the moon and the", "where is the door ?", "first: red", "song song song")
# The second chain only has to put v2 live: bounds wide enough for a noisy shared machine.
LENIENT = [
    "--evaluate-args",
    "--margin 0.5",
    "--perf-test-args",
    "--max-ttft-ratio 20 --min-tps-ratio 0.05",
]
CLIENTS = 8
SECONDS = 10.0
ROLLBACKS = 5  # versions promoted in turn, then rolled back one by one
SERVE_CLIENTS, SERVE_SECONDS = 4, 10.0  # Triton against mlflow models serve
SWITCH_CLIENTS, SWITCH_SETTLE_S, SWITCHES = 4, 3.0, 6  # live-slot switches under load
ROUTER_CLIENTS, ROUTER_SECONDS = 4, 10.0  # the router's overhead: same clients, both ways
# Split precision: at weight p over n requests the observed fraction's sd is sqrt(p(1-p)/n);
# 3,000 requests give at most 0.91 points (at 50%), so +-3 points is >= 3.3 sd.
SPLIT_WEIGHTS, SPLIT_REQUESTS = (5, 25, 50), 3000
ROLLOUT_STEPS, ROLLOUT_STEP_S = "5,25,50,100", 5  # a whole rollout under ROUTER_CLIENTS
# A second CV chain only has to put v2 live.
CV_LENIENT = [
    "--evaluate-args",
    "--min-accuracy 0.5 --margin 1",
    "--perf-test-args",
    "--max-p95-ratio 100 --min-rps-ratio 0",
]


def triton_throughput(slot: str, image_size: int) -> float:
    """Requests per second that CLIENTS threads sending one image each get from ``slot``."""
    import threading

    import numpy as np

    from steps.serving import triton

    x = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size)).astype(np.float32)
    counts = [0] * CLIENTS
    stop = time.monotonic() + SECONDS

    def client(index: int) -> None:
        server = triton.Triton()
        while time.monotonic() < stop:
            server.infer(slot, x)
            counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / SECONDS


def bench_cv(rows: list, client) -> None:
    import mlflow
    import numpy as np

    from steps.serving import triton

    model = "bench-digits"
    timed("data", "cv")
    rows.append(("mlcp cv chain (wall)", [timed("cv", "chain", "--model-name", model)]))
    bench_against_mlflow_serve(rows, model, "1", client)
    tags = client.get_model_version(model, "1").tags
    onnx = Path(mlflow.artifacts.download_artifacts(tags["mlcp.onnx_uri"])).read_bytes()
    image_size = int(tags["mlcp.image_size"])
    server = triton.Triton()
    rates = {}
    for label, batching in (("with", True), ("without", False)):
        slot = f"bench-batching-{label}"
        triton.write_entry(
            os.environ["MLCP_TRITON_REPOSITORY"],
            slot,
            "1",
            onnx,
            backend="python",
            image_size=image_size,
            num_classes=int(tags["mlcp.num_classes"]),
            dynamic_batching=batching,
        )
        server.load(slot, "1")
        triton_throughput(slot, image_size)  # warm-up pass, not counted
        rates[label] = triton_throughput(slot, image_size)
        rows.append((f"triton req/s {label} dyn. batching", [rates[label]]))
    rows.append(("triton batching speed-up (x)", [rates["with"] / rates["without"]]))
    # a second version live (v2, v1 previous), then the live slot switched under load
    timed("cv", "chain", "--model-name", model, "--seed", "1", *CV_LENIENT)
    slot = f"{model}-live"
    x = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size)).astype(np.float32)
    servers = [triton.Triton() for _ in range(SWITCH_CLIENTS)]
    switch_rows(rows, "triton", model, lambda i: servers[i].infer(slot, x)[1])


def closed_loop(ask, clients: int, seconds: float) -> tuple[float, float]:
    """Requests per second and p95 latency (ms) of ``clients`` threads calling ``ask(i)``
    without pause for ``seconds``."""
    import threading

    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        while time.monotonic() < stop:
            sent = time.perf_counter()
            ask(index)
            latencies[index].append(time.perf_counter() - sent)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(v for mine in latencies for v in mine)
    return len(every) / seconds, 1000 * statistics.quantiles(every, n=100)[94]


def bench_against_mlflow_serve(rows: list, model: str, version: str, client) -> None:
    """The same registered version behind Triton (its live slot) and behind
    ``mlflow models serve --env-manager local``: same client threads at batch 1, same image."""
    import json

    import numpy as np

    from steps.serving import triton

    size = int(client.get_model_version(model, version).tags["mlcp.image_size"])
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    servers = [triton.Triton() for _ in range(SERVE_CLIENTS)]
    slot = f"{model}-live"
    if servers[0].infer(slot, x)[1] != version:
        raise SystemExit(f"{slot} does not serve v{version}")
    closed_loop(lambda i: servers[i].infer(slot, x), SERVE_CLIENTS, 3)  # warm-up
    triton_rps, triton_p95 = closed_loop(
        lambda i: servers[i].infer(slot, x), SERVE_CLIENTS, SERVE_SECONDS
    )
    body = json.dumps({"inputs": x.tolist()}).encode()
    with mlflow_serve(f"models:/{model}/{version}", body) as ask:
        closed_loop(ask, SERVE_CLIENTS, 3)  # warm-up
        serve_rps, serve_p95 = closed_loop(ask, SERVE_CLIENTS, SERVE_SECONDS)
    rows.append(("triton req/s (4 clients, batch 1)", [triton_rps]))
    rows.append(("triton p95 ms (4 clients, batch 1)", [triton_p95]))
    rows.append(("mlflow models serve req/s (same)", [serve_rps]))
    rows.append(("mlflow models serve p95 ms (same)", [serve_p95]))
    rows.append(("triton / mlflow models serve req/s (x)", [triton_rps / serve_rps]))


@contextlib.contextmanager
def mlflow_serve(model_uri: str, body: bytes):
    """``mlflow models serve --env-manager local`` of ``model_uri`` on a free port, started
    and answering; yields ``ask(index)``: client ``index`` (one keep-alive connection each,
    SERVE_CLIENTS of them) posts ``body`` to ``/invocations``."""
    import http.client

    port = stack.free_port()
    log = open(Path(os.environ["MLCP_HOME"]) / "mlflow-serve.log", "w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            # it starts `uvicorn` by name: this environment's
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
    )
    try:
        conns = [
            http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(SERVE_CLIENTS)
        ]

        def ask(index: int) -> None:
            conns[index].request(
                "POST", "/invocations", body=body, headers={"Content-Type": "application/json"}
            )
            answer = conns[index].getresponse()
            data = answer.read()
            if answer.status != 200:
                raise SystemExit(f"mlflow models serve answered {answer.status}: {data[:300]}")

        deadline = time.monotonic() + 300
        while True:
            try:
                ask(0)
                break
            except (OSError, http.client.HTTPException):
                conns[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise SystemExit(
                        "mlflow models serve did not start: " + Path(log.name).read_text()[-2000:]
                    ) from None
                time.sleep(1)
        yield ask
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def switch_rows(rows: list, label: str, model: str, ask, live: str = "2") -> None:
    """Switch ``<model>-live`` back and forth SWITCHES times under SWITCH_CLIENTS threads
    between v1 and v2 (``benchmarked``): rollback, promote, rollback, ... when v2 is
    ``live`` to begin with (v1 previous), promote, rollback, ... when v1 is."""
    from . import switching

    promote_v2 = ("promote", "--model-name", model, "--source-alias", "benchmarked")
    promote_v2 += ("--target-alias", "live", "--reason", "bench switch")
    rollback = ("rollback", "--model-name", model, "--reason", "bench switch")
    switches = [
        switching.Switch(rollback, "1")
        if (n % 2 == 0) == (live == "2")
        else switching.Switch(promote_v2, "2")
        for n in range(SWITCHES)
    ]
    samples = switching.under_load(ask, switches, clients=SWITCH_CLIENTS, settle_s=SWITCH_SETTLE_S)
    for switch in switches:
        if switch.code != 0:
            raise SystemExit(f"{' '.join(switch.command)} failed: {switch.output[-2000:]}")
    found = switching.summary(samples, switches, SWITCH_CLIENTS)
    if found["errors"]:
        print(f"{label} switch errors: {found['errors']}")
    rows.append((f"{label} switch: requests ({SWITCHES} switches)", [found["requests"]]))
    rows.append((f"{label} switch: failed requests", [found["failed"]]))
    rows.append((f"{label} switch: steady p50 ms", [found["p50_ms"]]))
    rows.append((f"{label} switch: steady p99 ms", [found["p99_ms"]]))
    rows.append((f"{label} switch: worst ms during a switch", [found["worst_during_switch_ms"]]))
    rows.append((f"{label} switch: promote/rollback s", found["switch_s"]))
    rows.append((f"{label} switch: start to all clients new s", found["visible_s"]))


class KeepAlive:
    """One keep-alive HTTP connection per client posting JSON to ``url``; the answer's JSON."""

    def __init__(self, url: str, clients: int, headers: dict | None = None):
        import urllib.parse

        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.conns = [self._connect() for _ in range(clients)]

    def _connect(self):
        import http.client

        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def post(self, index: int, body: bytes) -> dict:
        import json

        conn = self.conns[index]
        conn.request("POST", self.path, body=body, headers=self.headers)
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise SystemExit(f"{self.path} answered {answer.status}: {data[:300]!r}")
        return json.loads(data)


def bench_router(rows: list, client, home: Path) -> None:
    """The router (Envoy) in front of Triton, on a model of two tiny nets (so that the hop's
    own cost shows): its overhead, split precision, a whole rollout under client load, and
    a rollback by flip."""
    import json

    from steps.cv.serving import TRITON
    from steps.registry import moves, router
    from steps.serving import envs
    from steps.spec.contract import staged_slot

    from . import switching
    from .test_triton import SIZE

    os.environ.setdefault(envs.CACHE_VAR, str(ENV_CACHE))  # the tests' build, linked by up
    started = time.perf_counter()
    os.environ.update(stack.up(home, services=["router"], ports={"router": stack.free_port()}))
    rows.append(("mlcp stack up router (env built)", [time.perf_counter() - started]))
    name = "bench-routed"
    (home / "router-onnx").mkdir()
    switching.register_onnx_versions(client, home / "router-onnx", name, pipeline="bench")
    client.set_registered_model_alias(name, "benchmarked", "1")
    promote.promote(name, "benchmarked", "live", reason="bench: v1 live")
    client.set_registered_model_alias(name, "benchmarked", "2")
    TRITON.load_live(client, name, "2", staged_slot(name))
    route = moves.route_for(name, TRITON, staged_slot(name))

    def shift(weight: int) -> float:
        common = {"champion": "1", "challenger": "2"}
        return moves.shift(client, name, route, weight, reason="bench", **common)

    applied = [shift(0)]
    data = [0.5] * (3 * SIZE * SIZE)
    tensor = {"name": "input", "shape": [1, 3, SIZE, SIZE], "datatype": "FP32", "data": data}
    body = json.dumps({"inputs": [tensor]}).encode()
    # (a) the same version (v1, the live slot) straight from Triton and through the router
    measured = {}
    for label, url in (
        ("direct", f"{os.environ['MLCP_TRITON_URL']}/v2/models/{name}-live/infer"),
        ("router", f"{os.environ[router.URL_ENV]}/v2/models/{name}/infer"),
    ):
        http = KeepAlive(url, ROUTER_CLIENTS)
        closed_loop(lambda i, h=http: h.post(i, body), ROUTER_CLIENTS, 3)  # warm-up
        measured[label] = closed_loop(
            lambda i, h=http: h.post(i, body), ROUTER_CLIENTS, ROUTER_SECONDS
        )
    for label, (rps, p95) in measured.items():
        rows.append((f"triton {label}: req/s ({ROUTER_CLIENTS} clients)", [rps]))
        rows.append((f"triton {label}: p95 ms", [p95]))
    rows.append(("router / direct req/s (x)", [measured["router"][0] / measured["direct"][0]]))
    rows.append(("router / direct p95 (x)", [measured["router"][1] / measured["direct"][1]]))
    # (b) the challenger's observed share of SPLIT_REQUESTS requests at each weight
    http = KeepAlive(f"{os.environ[router.URL_ENV]}/v2/models/{name}/infer", ROUTER_CLIENTS)
    for weight in SPLIT_WEIGHTS:
        applied.append(shift(weight))
        answers: list[str] = []

        def ask(index: int, answers=answers) -> None:
            while len(answers) < SPLIT_REQUESTS:
                answers.append(http.post(index, body)["model_version"])

        threaded(ask, ROUTER_CLIENTS)
        share = 100 * answers.count("2") / len(answers)
        rows.append((f"split at {weight}%: observed % ({len(answers)} req.)", [share]))
    rows.append(("router reports a new weight s", applied))
    shift(0)
    # (d) a whole rollout under client load, then (c) a rollback by flip, under the same load
    load = switching.RouterLoad(
        f"/v2/models/{name}/infer",
        {"inputs": [tensor]},
        lambda answer: answer["model_version"],
        ROUTER_CLIENTS,
    )
    with load:
        load.wait(20)
        offset = time.time() - time.monotonic()
        first = len(load.answers)
        args = ("--steps", ROLLOUT_STEPS, "--step-duration", str(ROLLOUT_STEP_S))
        lenient = ("--min-requests", "10", "--max-p95-ratio", "3", "--reason", "bench")
        took = timed("cv", "rollout", "--model-name", name, *args, *lenient)
        shifts = [r for r in moves.history(client, name, "traffic") if r.action == "shift"]
        done = len(load.answers)
        started = time.monotonic()
        flip = timed("rollback", "--model-name", name, "--reason", "bench flip")
        load.wait(len(load.answers) + 50)
    if set(load.answers[-20:]) != {"1"}:
        raise SystemExit(f"after the rollback by flip the clients got {load.answers[-20:]}")
    during = load.timed[first:done]
    rows.append((f"rollout {ROLLOUT_STEPS} ({ROLLOUT_STEP_S} s steps): wall s", [took]))
    rows.append(("rollout: requests", [len(during)]))
    rows.append(("rollout: failed requests", [sum(a.startswith("failed") for *_, a in during)]))
    for record in shifts[-(len(ROLLOUT_STEPS.split(",")) + 1) :]:
        info = client.get_run(record.run_id).info
        begin, end = info.start_time / 1000 - offset, info.end_time / 1000 - offset
        worst = max(
            (
                (answered - sent) * 1000
                for sent, answered, _ in during
                if sent <= end and answered >= begin
            ),
            default=float("nan"),
        )
        label = f"rollout {record.from_weight}->{record.to_weight}%: worst ms"
        rows.append((label, [worst]))
    late = [answered for sent, answered, v in load.timed if sent >= started and v != "1"]
    rows.append(("rollback by flip: mlcp exit s", [flip]))
    rows.append(
        ("rollback by flip: all clients v1 s", [(max(late) if late else started) - started])
    )
    rows.append(("rollback by flip: failed requests", [len(load.failed())]))
    reload = [v for label, v in rows if label == "triton switch: start to all clients new s"]
    if reload:
        rows.append(("rollback by reload (switches above) s", reload[0]))


def threaded(work, clients: int) -> None:
    """``work(index)`` in ``clients`` threads, until each returns."""
    import threading

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def bench_tabular(rows: list, home: Path, client) -> None:
    """The tabular pipeline on MLServer: its chain's wall time, then the version it put live
    served by MLServer (the live slot) and by ``mlflow models serve`` (the same MLflow model
    folder), same clients at one row per request."""
    import json

    from mlcp_tabular import MODEL_DIR_TAG, server
    from mlcp_tabular import data as tabdata

    from steps.serving import envs

    started = time.perf_counter()
    os.environ.setdefault(envs.CACHE_VAR, str(ENV_CACHE))  # the tests' build, linked by up
    services = ["mlflow", "s3", "mlserver"]
    values = stack.up(home, services=services, ports={"mlserver": stack.free_port()}, sync=False)
    rows.append(("mlcp stack up mlserver (env built)", [time.perf_counter() - started]))
    os.environ.update(values)
    model = "bench-wine"
    timed("data", "tabular")
    rows.append(("mlcp tabular chain (wall)", [timed("tabular", "chain", "--model-name", model)]))
    _, table = tabdata.read(tabdata.default_uri())
    x, _ = table.part("test")
    row = x[:1]
    v2 = json.dumps(tabdata.v2_request(table.features, row)).encode()
    mlserver = KeepAlive(f"{values[server.URL_VAR]}/v2/models/{model}-live/infer", SERVE_CLIENTS)
    closed_loop(lambda i: mlserver.post(i, v2), SERVE_CLIENTS, 3)  # warm-up
    rps, p95 = closed_loop(lambda i: mlserver.post(i, v2), SERVE_CLIENTS, SERVE_SECONDS)
    split = {"columns": table.features, "data": row.to_numpy().tolist()}
    uri = client.get_model_version(model, "1").tags[MODEL_DIR_TAG]
    with mlflow_serve(uri, json.dumps({"dataframe_split": split}).encode()) as ask:
        closed_loop(ask, SERVE_CLIENTS, 3)  # warm-up
        serve_rps, serve_p95 = closed_loop(ask, SERVE_CLIENTS, SERVE_SECONDS)
    rows.append((f"mlserver req/s ({SERVE_CLIENTS} clients, 1 row)", [rps]))
    rows.append(("mlserver p95 ms", [p95]))
    rows.append(("mlflow models serve req/s (same table)", [serve_rps]))
    rows.append(("mlflow models serve p95 ms (same table)", [serve_p95]))
    rows.append(("mlserver / mlflow models serve req/s (x)", [rps / serve_rps]))


def bench_llm(rows: list, home: Path) -> None:
    from steps.serving import envs, vllm

    os.environ.setdefault(envs.CACHE_VAR, str(ENV_CACHE))  # the tests' build, linked by up
    started = time.perf_counter()
    values = stack.up(home, ports={"vllm": stack.free_port()}, services=["vllm"])
    rows.append(("mlcp stack up vllm (env built)", [time.perf_counter() - started]))
    os.environ.update(values)
    server = vllm.VLLM(values["MLCP_VLLM_URL"])
    model, slot = "bench-llm", "bench-llm-live"
    timed("data", "llm")
    rows.append(("mlcp llm chain (wall)", [timed("llm", "chain", "--model-name", model)]))
    first = [server.complete(slot, p, 8) for p in PROBES]
    timed("llm", "chain", "--model-name", model, "--seed", "1", *LENIENT)
    second = [server.complete(slot, p, 8) for p in PROBES]
    started = time.perf_counter()
    timed("rollback", "--model-name", model)
    exited = time.perf_counter() - started
    while True:
        path = server.adapters().get(slot, {}).get("path", "")
        if Path(path).name == "1" and [server.complete(slot, p, 8) for p in PROBES] == first:
            break
        if time.perf_counter() - started > 120:
            raise SystemExit(f"{slot} did not answer as v1 within 120 s of the rollback")
        time.sleep(0.05)
    answered = time.perf_counter() - started
    rows.append(("llm rollback: mlcp exit", [exited]))
    rows.append(("llm rollback: live slot answers v1", [answered]))
    if first == second:
        print("note: v1 and v2 answer the probes alike; the slot's folder told them apart")
    # the live slot switched under load: each client sends one probe; its answer says which
    # version answered (where v1 and v2 answer it alike, the switch's visibility is unknown)
    clients = [vllm.VLLM(values["MLCP_VLLM_URL"]) for _ in range(SWITCH_CLIENTS)]

    def ask(index: int) -> str:
        k = index % len(PROBES)
        answer = clients[index].complete(slot, PROBES[k], 8)
        if first[k] == second[k]:
            return "1|2"
        return {first[k]: "1", second[k]: "2"}.get(answer, f"other: {answer!r}")

    switch_rows(rows, "vllm", model, ask, live="1")
    # a crash, then the stack's start: ready once the launcher loaded the manifest's slots
    import signal

    (service,) = [r for r in stack.status(home) if r["service"] == "vllm"]
    os.killpg(int(service["pid"]), signal.SIGKILL)
    port = int(values["MLCP_VLLM_URL"].rsplit(":", 1)[1])
    while not stack.port_free(port):
        time.sleep(0.1)
    started = time.perf_counter()
    stack.up(home, ports={"vllm": port}, services=["vllm"], sync=False)
    rows.append(("vllm killed: stack up until slots reloaded", [time.perf_counter() - started]))
    if Path(server.adapters().get(slot, {}).get("path", "")).name != "1":
        raise SystemExit(f"{slot} does not serve v1 after the restart")


def timed(*args: str, env: dict | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "steps.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"mlcp {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return elapsed


def timed_python(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def rest_calls(trace: Path) -> int:
    return sum(1 for line in trace.read_text().splitlines() if line.strip())


def rest_floor(models: ModelFactory, name: str, trace: Path, runs: int = 5) -> list[float]:
    """The same REST calls as one rollback, made by a bare script (tests/rest_floor.py)
    against a scratch model with as many versions and a scratch experiment."""
    floor = f"{name}-floor"
    client = models.client
    client.create_registered_model(floor)
    real = client.get_model_version(name, "1")  # the same artifacts, registered again
    for _ in range(ROLLBACKS + 1):
        client.create_model_version(floor, real.source, run_id=real.run_id)
    experiment_id = client.create_experiment(f"{name}/floor")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests" / "rest_floor.py"),
                str(trace),
                os.environ["MLFLOW_TRACKING_URI"],
                name,
                floor,
                experiment_id,
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    skip_cv = "--skip-cv" in sys.argv[1:]
    skip_llm = "--skip-llm" in sys.argv[1:]
    skip_router = skip_cv or "--skip-router" in sys.argv[1:]  # the router fronts Triton
    skip_tabular = "--skip-tabular" in sys.argv[1:]
    skip_chains = "--skip-chains" in sys.argv[1:]  # the CV part without its chains
    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="mlcp-bench-") as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        ports = {name: stack.free_port() for name in ("mlflow", "s3", "triton")}
        services = ("mlflow", "s3") if skip_cv else ("mlflow", "s3", "triton")
        values = stack.up(home, ports=ports, services=services)
        rows.append(("mlcp stack up (cold)", [time.perf_counter() - started]))
        os.environ.update(values)
        os.environ["MLCP_HOME"] = str(home)
        try:
            from steps.records import tracking

            models = ModelFactory(tracking.client())
            name = models.create(0, pipeline="bench", prefix="bench")
            for _ in range(ROLLBACKS + 1):
                version = models.add_version(name, pipeline="bench")
                models.set_alias(name, "benchmarked", version)
                promote.promote(name, "benchmarked", "live", reason="bench setup")
            rows.append(("mlcp --help", [timed("--help") for _ in range(5)]))
            trace = home / "rollback-trace.jsonl"
            rollbacks = []
            for expected in range(ROLLBACKS, 0, -1):
                env = {"MLCP_REST_TRACE": str(trace)} if expected == ROLLBACKS else None
                rollbacks.append(timed("rollback", "--model-name", name, env=env))
                live = models.aliases(name)["live"]
                if live != str(expected):
                    raise SystemExit(f"rollback left live at v{live}, expected v{expected}")
            rows.append(("mlcp rollback", rollbacks))
            rows.append(
                ("python -c 'import mlflow'", [timed_python("import mlflow") for _ in range(3)])
            )
            rows.append(
                (f"bare REST floor ({rest_calls(trace)} calls)", rest_floor(models, name, trace))
            )
            models.set_alias(name, "benchmarked", str(ROLLBACKS + 1))
            rows.append(
                (
                    "mlcp promote (to live)",
                    [
                        timed(
                            "promote",
                            "--model-name",
                            name,
                            "--source-alias",
                            "benchmarked",
                            "--target-alias",
                            "live",
                        )
                    ],
                )
            )
            rows.append(
                ("mlcp history", [timed("history", "--model-name", name) for _ in range(3)])
            )
            if not skip_cv and not skip_chains:
                bench_cv(rows, tracking.client())
            if not skip_router:
                bench_router(rows, tracking.client(), home)
            if not skip_tabular:
                bench_tabular(rows, home, tracking.client())
            if not skip_llm:
                bench_llm(rows, home)
        finally:
            stack.down(home)
    print()
    print(f"{'measure':<44} {'runs':>4} {'median':>9} {'min':>9} {'target':>9}  verdict")
    for label, samples in rows:
        target = TARGETS.get(label)
        median = statistics.median(samples)
        verdict = "" if target is None else ("meets" if median < target else "MISSES")
        target_text = "" if target is None else f"< {target:g}"
        print(
            f"{label:<44} {len(samples):>4} {median:>9.2f} {min(samples):>9.2f} "
            f"{target_text:>9}  {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
