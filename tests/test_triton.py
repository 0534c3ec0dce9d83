"""The Triton serving client against the session stack's real tritonserver (python backend).

Each test writes real ONNX exports of small torch nets into the stack's model repository and
drives the server through explicit model control: load, version switch, rollback, unload,
inference, and the error paths.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from steps.base.errors import BadInput, MlcpError
from steps.local import stack
from steps.serving import triton

from .conftest import unique

SIZE = 16
CLASSES = 10


def tiny_net(seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, CLASSES),
    ).eval()


def export(net, path: Path) -> bytes:
    import torch

    with warnings.catch_warnings():  # the legacy exporter is what the deploy step uses
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.zeros(2, 3, SIZE, SIZE),),
            str(path),
            dynamo=False,
            input_names=[triton.INPUT_NAME],
            output_names=[triton.OUTPUT_NAME],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path.read_bytes()


def torch_logits(net, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Two versions of a model: different weights, their ONNX bytes."""
    folder = tmp_path_factory.mktemp("onnx")
    made = {}
    for version, seed in (("1", 1), ("2", 2)):
        net = tiny_net(seed)
        made[version] = (net, export(net, folder / f"v{version}.onnx"))
    return made


@pytest.fixture(scope="module")
def server(stack_env):
    return triton.Triton()  # from MLCP_TRITON_URL, as the steps do


@pytest.fixture
def repository(stack_env) -> Path:
    return Path(stack_env["MLCP_TRITON_REPOSITORY"])


@pytest.fixture
def slot(repository, nets, server):
    """A slot with versions 1 and 2 written (none loaded); unloaded afterwards."""
    name = unique("cv")
    for version, (_, onnx_bytes) in nets.items():
        triton.write_entry(
            str(repository),
            name,
            version,
            onnx_bytes,
            backend="python",
            image_size=SIZE,
            num_classes=CLASSES,
        )
    yield name
    server.unload(name)


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, SIZE, SIZE), dtype=np.float32)


def test_stack_env_names_the_server_and_its_repository(stack_env, repository):
    assert stack_env["MLCP_TRITON_URL"].startswith("http://127.0.0.1:")
    assert repository == stack_env["home"] / "triton" / "models" and repository.is_dir()
    triton.Triton().require_live()


def test_loaded_version_answers_like_torch_and_onnxruntime(server, slot, nets):
    import onnxruntime as ort

    # given version 1 loaded
    server.load(slot, 1)
    assert server.served_versions(slot) == ["1"]
    # when a batch is inferred
    x = batch(5)
    logits, answered = server.infer(slot, x)
    # then version 1 answered, with the logits of the exported net
    net, onnx_bytes = nets["1"]
    assert answered == "1"
    assert logits.shape == (5, CLASSES) and logits.dtype == np.float32
    reference = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(logits, reference.run(None, {"input": x})[0], atol=1e-4)
    np.testing.assert_allclose(logits, torch_logits(net, x), atol=1e-4)
    # and the other version's weights would have answered differently
    assert np.abs(logits - torch_logits(nets["2"][0], x)).max() > 1e-3


def test_switch_to_v2_then_roll_back_to_v1_while_v2_stays_in_the_repository(
    server, slot, nets, repository
):
    x = batch(3, seed=1)
    server.load(slot, "1")
    # when version 2 is loaded
    server.load(slot, "2")
    # then only version 2 serves, with its own weights
    assert server.served_versions(slot) == ["2"]
    logits, answered = server.infer(slot, x)
    assert answered == "2"
    np.testing.assert_allclose(logits, torch_logits(nets["2"][0], x), atol=1e-4)
    # when version 1 is loaded again although the higher version 2 is still there (rollback)
    assert (repository / slot / "2" / "model.onnx").is_file()
    server.load(slot, 1)
    # then version 1 serves again, and only it
    assert server.served_versions(slot) == ["1"]
    logits, answered = server.infer(slot, x)
    assert answered == "1"
    np.testing.assert_allclose(logits, torch_logits(nets["1"][0], x), atol=1e-4)


def test_unload_empties_the_slot_and_inference_on_it_is_bad_input(server, slot):
    server.load(slot, 2)
    server.unload(slot)
    assert server.served_versions(slot) == []
    with pytest.raises(BadInput, match="does not serve"):
        server.infer(slot, batch(1))
    assert server.served_versions(unique("never-loaded")) == []


def test_wrong_input_shapes_are_bad_input_naming_the_expected_shape(server, slot):
    server.load(slot, 1)
    with pytest.raises(BadInput, match=r"\[N,3,16,16\]") as wrong_size:
        server.infer(slot, np.zeros((2, 3, 8, 8), np.float32))
    assert "[2, 3, 8, 8]" in str(wrong_size.value)
    with pytest.raises(BadInput, match=r"\[N,3,16,16\]"):
        server.infer(slot, np.zeros((3, SIZE, SIZE), np.float32))  # no batch dimension
    with pytest.raises(BadInput, match="<= 64"):
        server.infer(slot, np.zeros((65, 3, SIZE, SIZE), np.float32))
    # and the slot still serves afterwards
    assert server.infer(slot, batch(2))[1] == "1"


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(server, slot, repository):
    server.load(slot, 1)
    triton.write_entry(
        str(repository),
        slot,
        3,
        b"this is not an ONNX file",
        backend="python",
        image_size=SIZE,
        num_classes=CLASSES,
    )
    with pytest.raises(MlcpError, match=f"loading {slot} version 3") as failed:
        server.load(slot, 3)
    assert "load failed" in str(failed.value)  # Triton's own message
    assert server.served_versions(slot) == ["1"]
    assert server.infer(slot, batch(1))[1] == "1"
    # a version that was never written cannot be loaded either
    with pytest.raises(MlcpError, match="version 7"):
        server.load(slot, 7)
    assert server.served_versions(slot) == ["1"]


def test_switching_versions_under_load_fails_no_request(server, slot, nets):
    # given version 1 serving and a few clients inferring without pause
    server.load(slot, 1)
    stop = threading.Event()
    answers: list[str] = []
    errors: list[str] = []
    expected = {}
    inputs = [batch(n, seed=n) for n in (1, 3, 5)]  # mixed sizes: the batcher joins them
    for x in inputs:
        expected[x.shape[0]] = {v: torch_logits(net, x) for v, (net, _) in nets.items()}

    def client(x):
        while not stop.is_set():
            try:
                logits, version = server.infer(slot, x)
                np.testing.assert_allclose(logits, expected[len(x)][version], atol=1e-4)
                answers.append(version)
            except Exception as exc:  # any failure counts
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(x,)) for x in inputs]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        # when the slot switches to version 2 and back to 1
        server.load(slot, 2)
        time.sleep(0.5)
        server.load(slot, 1)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    # then every request succeeded with the logits of the version that answered
    assert errors == []
    assert {"1", "2"} <= set(answers) and len(answers) > 30
    assert server.infer(slot, inputs[0])[1] == "1"


def test_unknown_backend_is_bad_input_and_writes_nothing(repository, nets):
    name = unique("cv")
    with pytest.raises(BadInput, match="python, onnxruntime"):
        triton.write_entry(
            str(repository),
            name,
            1,
            nets["1"][1],
            backend="tensorrt",
            image_size=SIZE,
            num_classes=CLASSES,
        )
    assert not (repository / name).exists()
    with pytest.raises(BadInput, match="positive integer"):
        triton.write_entry(
            str(repository),
            name,
            "v1",
            nets["1"][1],
            backend="python",
            image_size=SIZE,
            num_classes=CLASSES,
        )


def test_local_entries_are_complete_and_rewriting_a_version_replaces_it(tmp_path, nets):
    # the onnxruntime backend (the official image's) needs no model.py
    path = triton.write_entry(
        str(tmp_path),
        "ort",
        4,
        nets["1"][1],
        backend="onnxruntime",
        image_size=SIZE,
        num_classes=CLASSES,
        max_batch_size=8,
    )
    assert Path(path) == tmp_path / "ort" / "4"
    assert sorted(p.name for p in (tmp_path / "ort").iterdir()) == ["4", "config.pbtxt"]
    assert sorted(p.name for p in Path(path).iterdir()) == ["config.pbtxt", "model.onnx"]
    config = triton.parse_pbtxt((tmp_path / "ort" / "config.pbtxt").read_text())
    assert config["version_policy"] == {"specific": {"versions": [4]}}  # a new slot: pinned
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == 8 and "dynamic_batching" in config
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 16, 16]}]
    assert config["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}]
    # writing the same version again replaces it whole, leaving no temporary folders
    triton.write_entry(
        str(tmp_path),
        "ort",
        4,
        nets["2"][1],
        backend="onnxruntime",
        image_size=SIZE,
        num_classes=CLASSES,
    )
    assert (tmp_path / "ort" / "4" / "model.onnx").read_bytes() == nets["2"][1]
    assert sorted(p.name for p in (tmp_path / "ort").iterdir()) == ["4", "config.pbtxt"]


def test_write_entry_to_s3_uploads_the_version_and_the_config(stack_env, nets):
    import boto3

    bucket = stack_env["MLCP_BUCKET"]
    name = unique("cv")
    uri = triton.write_entry(
        f"s3://{bucket}/triton-test/",
        name,
        "2",
        nets["2"][1],
        backend="python",
        image_size=SIZE,
        num_classes=CLASSES,
    )
    assert uri == f"s3://{bucket}/triton-test/{name}/2"
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"triton-test/{name}/")
    keys = sorted(obj["Key"] for obj in listed.get("Contents", []))
    assert keys == [
        f"triton-test/{name}/2/config.pbtxt",
        f"triton-test/{name}/2/model.onnx",
        f"triton-test/{name}/2/model.py",
        f"triton-test/{name}/config.pbtxt",
    ]
    body = s3.get_object(Bucket=bucket, Key=f"triton-test/{name}/2/model.onnx")["Body"].read()
    assert body == nets["2"][1]
    config_text = s3.get_object(Bucket=bucket, Key=f"triton-test/{name}/config.pbtxt")["Body"]
    config = triton.parse_pbtxt(config_text.read().decode())
    assert config["name"] == name and config["backend"] == "python"
    assert config["output"][0]["dims"] == [CLASSES]
    # the pin moves on S3 too, by one put of the slot's config
    triton.write_entry(
        f"s3://{bucket}/triton-test",
        name,
        "3",
        nets["1"][1],
        backend="python",
        image_size=SIZE,
        num_classes=CLASSES,
    )
    assert triton.pinned(f"s3://{bucket}/triton-test", name) == "2"
    triton.pin(f"s3://{bucket}/triton-test", name, "3")
    assert triton.pinned(f"s3://{bucket}/triton-test", name) == "3"


def test_writing_a_version_keeps_the_pin_and_pin_moves_it_whole(tmp_path, nets):
    # given a slot written with v1 (python backend, batch 64): pinned to v1
    repository = str(tmp_path)
    write = dict(image_size=SIZE, num_classes=CLASSES)
    triton.write_entry(repository, "s", 1, nets["1"][1], backend="python", **write)
    assert triton.pinned(repository, "s") == "1"
    # when v2 is written with another backend and batch size
    triton.write_entry(
        repository, "s", 2, nets["2"][1], backend="onnxruntime", max_batch_size=8, **write
    )
    # then the slot's config (what a restart loads) is v1's, untouched
    config = triton.parse_pbtxt((tmp_path / "s" / "config.pbtxt").read_text())
    assert config["backend"] == "python" and config["max_batch_size"] == 64
    assert triton.pinned(repository, "s") == "1"
    # and a load of v2 would send v2's own config, pinned to v2
    loaded = triton.version_config(repository, "s", 2)
    assert loaded["backend"] == "onnxruntime" and loaded["max_batch_size"] == 8
    assert loaded["version_policy"] == {"specific": {"versions": [2]}}
    # when v2 is pinned, the slot's config becomes v2's whole, leaving no temporary file
    triton.pin(repository, "s", 2)
    config = triton.parse_pbtxt((tmp_path / "s" / "config.pbtxt").read_text())
    assert config["backend"] == "onnxruntime" and config["max_batch_size"] == 8
    assert triton.pinned(repository, "s") == "2"
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["1", "2", "config.pbtxt"]
    # a version never written cannot be pinned
    with pytest.raises(BadInput, match="no s/config.pbtxt|has no"):
        triton.pin(repository, "t", 1)


def test_unreachable_triton_is_reported_fast(stack_env):
    down = triton.Triton(f"http://127.0.0.1:{stack.free_port()}")
    started = time.monotonic()
    with pytest.raises(MlcpError, match="Triton is not reachable at http://127.0.0.1:"):
        down.require_live()
    with pytest.raises(MlcpError, match="not reachable"):
        down.load("anything", 1)
    with pytest.raises(MlcpError, match="not reachable"):
        down.infer("anything", batch(1))
    assert time.monotonic() - started < 10


def test_a_url_is_required(monkeypatch):
    monkeypatch.delenv("MLCP_TRITON_URL", raising=False)
    with pytest.raises(BadInput, match="MLCP_TRITON_URL"):
        triton.Triton()
    assert triton.Triton("127.0.0.1:8000").url == "http://127.0.0.1:8000"


def test_config_text_round_trips_and_hand_written_configs_parse():
    for backend in triton.BACKENDS:
        config = triton.model_config("m", backend=backend, image_size=32, num_classes=5)
        assert triton.parse_pbtxt(triton.render_pbtxt(config)) == config
    text = """
    # written by hand
    name: "m"  backend: "python"
    max_batch_size: 4
    input { name: "input" data_type: TYPE_FP32 dims: [ 3, 8, 8 ] }
    output [ { name: "logits", data_type: TYPE_FP32, dims: 2 } ]
    instance_group { kind: KIND_CPU count: 2 }
    parameters: { key: "intra_op_threads" value: { string_value: "2" } }
    """
    assert triton.parse_pbtxt(text) == {
        "name": "m",
        "backend": "python",
        "max_batch_size": 4,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 8, 8]}],
        "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [2]}],
        "instance_group": [{"kind": "KIND_CPU", "count": 2}],
        "parameters": {"intra_op_threads": {"string_value": "2"}},
    }
