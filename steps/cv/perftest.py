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
intervals (steps/decisions/paired.py). Gates: ``p95-latency`` (a maximum), ``throughput`` (a
minimum), ``error-rate`` (a maximum), and, against the champion, ``p95-vs-champion`` (refused when
the interval's lower end is above ``--max-p95-ratio``) and ``throughput-vs-champion`` (refused
when its upper end is below ``--min-rps-ratio``): a challenger is refused when its interval
shows it slower than the tolerance allows. With no champion (the first version) the load
goes to the staged slot only, and only the absolute gates apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..serving import triton
from ..spec.declare import Stage, option
from ..stages import perf
from ..stages.perf import CHALLENGER, CHAMPION, GATES
from ..stages.stage import Reporter
from . import IMAGE_SIZE_TAG, PIPELINE
from . import data as cvdata
from .evaluate import connect, slots


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


class PerfTest(perf.PerfTest):
    report = report
    data = cvdata
    connect = staticmethod(connect)
    slots = staticmethod(slots)

    def run_name(self, t):
        return {"v": t.version, "u": t.cfg.users, "b": t.cfg.batch}

    def bodies(self, t):
        """Each slot's images at its own version's image size."""
        found = {
            CHALLENGER: request_body(t.data, int(t.tags.get(IMAGE_SIZE_TAG, "32")), t.cfg.batch)
        }
        if t.champion_slot:
            champion_tags = t.client.get_model_version(t.model, t.champion.version).tags
            size = int(champion_tags.get(IMAGE_SIZE_TAG, "32"))
            found[CHAMPION] = request_body(t.data, size, t.cfg.batch)
        return found


STAGE = Stage(
    PIPELINE,
    "perf-test",
    "load-test the staged slot with locust, side by side with the champion",
    PerfConfig,
    PerfTest(),
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
