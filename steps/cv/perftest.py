"""``mlcp cv perf-test``: reads ``evaluated``, load-tests Triton's HTTP endpoint of the staged
slot, side by side with the champion's slot, in one headless locust run; writes
``benchmarked``.

The challenger's slot ``<model>-staged`` and the champion's ``<model>-live`` (the version
``--champion-alias``, ``live`` by default, names; the slot is checked to serve it) each get
``--users`` users of the same locust run, for the same seconds, sending the same test images
(each at its version's image size): their requests interleave on the same server, so both
are measured on the same machine at the same moments. Logged per slot: p50/p95/p99 latency,
requests per second, error rate, the raw statistics and a latency-distribution picture; and
the challenger/champion ratios of the p95 latency (per-request latencies, bootstrap) and of
the throughput (requests in the same one-second buckets, paired bootstrap) with their 95%
intervals (steps/paired.py). Gates: ``p95-latency`` (a maximum), ``throughput`` (a minimum),
``error-rate`` (a maximum), and, against the champion, ``p95-vs-champion`` (refused when the
interval's lower end is above ``--max-p95-ratio``) and ``throughput-vs-champion`` (refused
when its upper end is below ``--min-rps-ratio``): a challenger is refused when its interval
shows it slower than the tolerance allows. With no champion (the first version) the load
goes to the staged slot only, and only the absolute gates apply.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import perf, tracking
from ..declare import Stage, option
from ..perf import CHALLENGER, CHAMPION, GATES
from ..serving import triton
from ..stage import Reporter, data_source, resolve_input
from . import IMAGE_SIZE_TAG, PIPELINE
from . import data as cvdata
from .deploy import require_champion, require_staged


@dataclass(kw_only=True)
class PerfConfig(perf.PerfTestConfig):
    users: int = option(
        4, help="concurrent simulated users per slot (the champion's gets as many)", min=1, max=32
    )
    duration: float = option(8.0, help="seconds of load", min=2, max=600)
    batch: int = option(1, help="images per request", min=1, max=64)
    triton_url: str | None = triton.url_option()


report = Reporter(PIPELINE, "perf-test")


def request_body(images, image_size: int, batch: int) -> dict:
    """The JSON inference request of ``batch`` test images at ``image_size``."""
    x = cvdata.preprocess(images.images["test"][:batch], image_size)
    return {
        "inputs": [
            {
                "name": triton.INPUT_NAME,
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.flatten().tolist(),
            }
        ],
        "outputs": [{"name": triton.OUTPUT_NAME}],
    }


def perf_test(cfg: PerfConfig) -> dict:

    server = triton.Triton(cfg.triton_url)
    server.require_live()
    client, version, tags = resolve_input(cfg.model_name, cfg.input_alias)
    slot = require_staged(server, cfg.model_name, version)
    champion, champion_slot = require_champion(
        server, client, cfg.model_name, cfg.champion_alias, version
    )
    _, images = cvdata.read(data_source(cfg.model_name, version, tags))
    bodies = {
        CHALLENGER: (slot, request_body(images, int(tags.get(IMAGE_SIZE_TAG, "32")), cfg.batch))
    }
    if champion.version is not None:
        champion_tags = client.get_model_version(cfg.model_name, champion.version).tags
        size = int(champion_tags.get(IMAGE_SIZE_TAG, "32"))
        bodies[CHAMPION] = (champion_slot, request_body(images, size, cfg.batch))
    name = tracking.run_name(cfg.model_name, {"v": version, "u": cfg.users, "b": cfg.batch})
    params = {k: v for k, v in vars(cfg).items() if k not in ("model_name", "triton_url")}
    params.update(champion_version=champion.version or "none", slots=len(bodies))
    with (
        report.stage_run(cfg.model_name, name, version=version, params=params),
        tempfile.TemporaryDirectory() as tmp,
    ):
        against = f" and {champion_slot} v{champion.version}" if champion.version else ""
        report(
            f"{cfg.users} users per slot for {cfg.duration:g} s against {slot} v{version}{against}"
        )
        targets = {label: (f"/v2/models/{t}/infer", body) for label, (t, body) in bodies.items()}
        measured = perf.load_and_judge(
            report,
            cfg,
            url=server.url,
            bodies=targets,
            version=version,
            champion=champion,
            tmp=Path(tmp),
        )
    return perf.advance(report, cfg, client, version, champion, measured)


STAGE = Stage(
    PIPELINE,
    "perf-test",
    "load-test the staged slot with locust, side by side with the champion",
    PerfConfig,
    perf_test,
    GATES,
    title="CV: load-test the staged slot beside the champion (evaluated -> benchmarked)",
    description=(
        "One bounded locust load against Triton's <model>-staged slot and the champion's "
        "<model>-live slot, interleaved; records p50/p95/p99, requests per second and the "
        "error rate of each, and the challenger/champion ratios of the p95 latency and the "
        "throughput with bootstrap 95% intervals; the p95-latency, throughput and "
        "error-rate gates and the p95-vs-champion and throughput-vs-champion gates decide "
        "output-alias (benchmarked)."
    ),
)
