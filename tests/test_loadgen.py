"""The V2 load generator (``python -m steps.decisions.v2load``) against a real HTTP server on
loopback: the standard library's, which counts what it is sent. It stands in for a V2 server
here because what is checked is the generator's own bookkeeping (the warm-up is sent and not
counted, bad flags are refused), not a model's answers; the pipelines' tests load Triton and
MLServer themselves."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture
def server():
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the standard library's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.path)
            body = b'{"outputs": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


def load(url: str, tmp_path, *flags: str) -> subprocess.CompletedProcess:
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"inputs": []}))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "steps.decisions.v2load",
            "--url",
            url,
            "--out",
            str(tmp_path / "stats.json"),
            "--target",
            "challenger",
            "/v2/models/m/infer",
            str(body),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_warm_up_is_sent_before_the_run_and_not_counted(server, tmp_path):
    url, seen = server
    done = load(url, tmp_path, "--users", "1", "--duration", "2", "--warmup", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((tmp_path / "stats.json").read_text())
    counted = stats["targets"]["challenger"]["requests"]
    assert stats["warmup"] == {"challenger": {"requests": 3, "failed": 0}}
    # the server saw the three warm-up requests on top of the counted ones (and at most the
    # one user's request still in flight when the run stopped)
    assert counted > 0 and counted + 3 <= len(seen) <= counted + 4
    assert set(seen) == {"/v2/models/m/infer"}


def test_a_warm_up_out_of_range_is_refused_and_nothing_is_sent(server, tmp_path):
    url, seen = server
    done = load(url, tmp_path, "--warmup", "-1")
    assert done.returncode == 2 and "--warmup must be 0..50" in done.stderr
    assert seen == [] and not (tmp_path / "stats.json").exists()
