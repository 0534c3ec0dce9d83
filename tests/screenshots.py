"""Screenshots of the MLflow UI for the documentation site: ``make screenshots``
(``python -m tests.screenshots``).

Run against the local stack after ``make demo`` (twice, then ``mlcp rollback``) and
``make demo-llm``, so that the registry holds what the pictures show. Headless Chromium
(Debian's ``chromium`` package, ``/usr/bin/chromium``; ``$CHROMIUM`` names another) opens
each page of the local MLflow UI and writes a PNG under ``docs/images/``:

- ``ui-model-versions.png``: the registered model's versions, with their descriptions;
- ``ui-decision-run.png``: a gate's decision run (threshold, value, verdict);
- ``ui-traces.png``: the traced answers of the LLM evaluation;
- ``ui-history.png``: the alias moves of the model, each a run of ``cv/promote``.

The pages are read from MLflow's own API, so the images show the real UI of the stack.
Nothing here runs in ``make test``; the images are committed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
CV_MODEL = "resnet18-digits"
# The model page lists its versions below its description and tags: a taller window.
SIZES = {"ui-model-versions.png": "1440,1700"}
LLM_MODEL = "tiny-llama-instruct"
# The flags that let headless Chromium run here as root, with no network but loopback.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not found:
        raise SystemExit(
            "make screenshots: no chromium found: `apt-get install chromium` (Debian), or set "
            "CHROMIUM to a Chromium binary"
        )
    return found


def shoot(browser: str, url: str, out: Path, size: str = "1440,900", wait_ms: int = 20000):
    """One page as a PNG: Chromium waits ``wait_ms`` of virtual time for the UI to load."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--virtual-time-budget={wait_ms}",
                f"--screenshot={out}",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"chromium failed on {url}:\n{done.stderr[-2000:]}")
    print(f"wrote {out.relative_to(ROOT)} ({url})")


def pages(client, ui: str) -> dict[str, str]:
    """Each picture's address in the MLflow UI, read from the stack's registry and runs."""
    from steps.records import tracking
    from steps.spec.contract import KIND_TAG, MODEL_TAG

    def experiment(name: str) -> str:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise SystemExit(
                f"make screenshots: no experiment {name!r} on {ui}: run `make demo` (twice, "
                "then `mlcp rollback`) and `make demo-llm` first"
            )
        return found.experiment_id

    for model in (CV_MODEL, LLM_MODEL):
        try:
            client.get_registered_model(model)
        except Exception:
            raise SystemExit(
                f"make screenshots: no registered model {model!r} on {ui}: run `make demo` and "
                "`make demo-llm` first"
            ) from None
    evaluate = experiment(tracking.experiment_name("cv", "evaluate"))
    (decision,) = client.search_runs(
        [evaluate],
        f"tags.`{KIND_TAG}` = 'decision' AND tags.`{MODEL_TAG}` = '{CV_MODEL}' "
        "AND tags.`mlcp.gate` = 'accuracy-vs-champion'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return {
        "ui-model-versions.png": f"{ui}/#/models/{CV_MODEL}",
        "ui-decision-run.png": f"{ui}/#/experiments/{evaluate}/runs/{decision.info.run_id}",
        "ui-traces.png": (
            f"{ui}/#/experiments/{experiment('llm/evaluate')}/traces?workflowType=genai"
        ),
        "ui-history.png": (
            f"{ui}/#/experiments/{experiment('cv/promote')}?workflowType=machine_learning"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.screenshots", description=__doc__)
    ap.add_argument("--out", type=Path, default=OUT, help="folder (default docs/images)")
    args = ap.parse_args(argv)
    from steps.base import settings
    from steps.records import tracking

    settings.load_env()
    ui = settings.tracking_uri().rstrip("/")
    if not ui.startswith("http"):
        raise SystemExit("make screenshots: no local stack: run `make demo` first")
    browser = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, url in pages(tracking.client(), ui).items():
        shoot(browser, url, args.out / name, size=SIZES.get(name, "1440,900"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
