"""Traces of the calls the stages make to models and judges, and ``mlcp traces``.

A stage that asks a model or a judge something opens one MLflow trace per call
(:func:`call`): a span of its own, named after the call (``answer``, ``judge``, ``smoke``),
holding what was asked and answered, tagged with the keys of :data:`steps.spec.contract.TRACE_TAGS`
(the call, the model, the version the slot served, the sample, the slot, the judge prompt's
sha256, the grade). A call through the ``openai`` client is a child span of it, written by
MLflow's autologging for that client (:func:`autolog`): the request, the reply, the latency
and the token counts. A call that is not an HTTP call (the reference judge) is the span alone.
The run that is active when the call is made is the trace's run, so the traces of a stage are
found by its run (``mlflow.search_traces(run_id=...)``).

A grade is known only after the answer's trace has ended: :func:`attach_grades` then tags the
answer's trace with it and attaches it as an assessment (MLflow's feedback), whose source is
the judge.

``mlcp traces MODEL@ALIAS [--grade G] [--judge-prompt SHA]`` lists the traced answers of the
newest stage run of that version that traced answers (its evaluation). The core is blind to
pipelines: it knows calls, slots and grades, not which pipeline made them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

from ..base.errors import BadInput, MlcpError
from ..spec.contract import (
    ANSWER_CALL,
    CALL_TAG,
    GRADE_ASSESSMENT,
    GRADE_TAG,
    JUDGE_CALL,
    JUDGE_PROMPT_TAG,
    KIND_TAG,
    MODEL_TAG,
    SAMPLE_TAG,
    SLOT_TAG,
    VERSION_TAG,
    show_version,
)

SHA_RE = re.compile(r"^[0-9a-f]{8,64}$")
GRADE_RE = re.compile(r"^[a-z][a-z_-]{0,31}$")
ATTACH_WORKERS = 8


def autolog() -> None:
    """Trace every call of the ``openai`` client in this process (MLflow's autologging; the
    perf-test never calls this, so a load is not slowed by tracing)."""
    import mlflow

    mlflow.openai.autolog(silent=True)


@contextlib.contextmanager
def call(name: str, tags: Mapping[str, object], inputs: Mapping[str, object]) -> Iterator:
    """One traced call: a root span ``name`` with ``inputs``, its trace tagged ``tags`` and
    ``CALL_TAG = name``. Yields the span (``set_outputs`` it; ``trace_id`` names the trace)."""
    import mlflow
    from mlflow.entities import SpanType

    span_type = SpanType.EVALUATOR if name == JUDGE_CALL else SpanType.LLM
    with mlflow.start_span(name, span_type=span_type) as span:
        span.set_inputs(dict(inputs))
        mlflow.update_current_trace(tags={CALL_TAG: name, **{k: str(v) for k, v in tags.items()}})
        yield span


def tag_current(tags: Mapping[str, object]) -> None:
    """Add tags to the trace of the span that is open now (a grade known inside the call)."""
    import mlflow

    mlflow.update_current_trace(tags={k: str(v) for k, v in tags.items()})


def attach_grades(graded: list[tuple[str, str]], *, judge: str, code: bool) -> None:
    """Tag each answer's trace with its grade and attach the grade as an assessment whose
    source is the judge (``code``: a deterministic rubric; else an LLM judge). Waits for the
    traces to reach the tracking server first (they are sent in the background)."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    mlflow.flush_trace_async_logging()
    client = mlflow.MlflowClient()
    source = AssessmentSource(
        source_type=AssessmentSourceType.CODE if code else AssessmentSourceType.LLM_JUDGE,
        source_id=judge,
    )

    def attach(item: tuple[str, str]) -> None:
        trace_id, grade = item
        client.set_trace_tag(trace_id, GRADE_TAG, grade)
        mlflow.log_feedback(trace_id=trace_id, name=GRADE_ASSESSMENT, value=grade, source=source)

    # two requests per answer, each a round trip to the tracking server: a few at a time
    # (about four times faster than one by one for 60 answers here)
    with ThreadPoolExecutor(max_workers=ATTACH_WORKERS) as pool:
        list(pool.map(attach, graded))  # list(): the first failure is raised here


def flush() -> None:
    """Send the traces still queued (before a process that made them ends)."""
    import mlflow

    mlflow.flush_trace_async_logging()


# ------------------------------------------------------------------------- mlcp traces


def quote(value: str) -> str:
    return value.replace("'", "\\'")


def answer_filter(grade: str | None = None, judge_prompt: str | None = None) -> str:
    """The ``search_traces`` filter of the traced answers (with that grade, judged with
    instructions whose sha256 is or starts with ``judge_prompt``)."""
    parts = [f"tags.`{CALL_TAG}` = '{ANSWER_CALL}'"]
    if grade:
        if not GRADE_RE.match(grade):
            raise BadInput(f"--grade must be a grade such as wrong, got {grade!r}")
        parts.append(f"tags.`{GRADE_TAG}` = '{grade}'")
    if judge_prompt:
        sha = judge_prompt.strip().lower()
        if not SHA_RE.match(sha):
            raise BadInput(
                "--judge-prompt must be a sha256 (or its first 8+ hex digits), got "
                f"{judge_prompt!r}"
            )
        op = "=" if len(sha) == 64 else "LIKE"
        parts.append(f"tags.`{JUDGE_PROMPT_TAG}` {op} '{sha if len(sha) == 64 else sha + '%'}'")
    return " AND ".join(parts)


def _search(run, filter_string: str, max_results: int | None = None) -> list:
    import mlflow

    return mlflow.search_traces(
        locations=[run.info.experiment_id],
        run_id=run.info.run_id,
        filter_string=filter_string,
        max_results=max_results,
        order_by=["timestamp_ms ASC"],
        include_spans=False,
        return_type="list",
    )


def find(client, model: str, alias: str, *, grade=None, judge_prompt=None) -> dict:
    """The traced answers of ``model@alias``'s newest stage run that traced answers."""
    from . import aliases, moves

    flt = answer_filter(grade, judge_prompt)  # bad input before any look-up
    version = aliases.resolve(client, model, alias)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = moves.search_all(
        client,
        experiments,
        f"tags.`{MODEL_TAG}` = '{moves.quote(model)}' AND tags.`{VERSION_TAG}` = '{version}' "
        f"AND tags.`{KIND_TAG}` = 'stage'",
    )
    runs.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    traced = next((r for r in runs if _search(r, answer_filter(), 1)), None)
    if traced is None:
        raise MlcpError(
            f"no run of {model} {show_version(version)} ({model}@{alias}) traced any answers: "
            "has it been evaluated (`mlcp llm evaluate`)?"
        )
    rows = []
    for trace in _search(traced, flt):
        tags = trace.info.tags
        rows.append(
            {
                "trace_id": trace.info.trace_id,
                "sample_id": tags.get(SAMPLE_TAG, ""),
                "slot": tags.get(SLOT_TAG, ""),
                "version": tags.get(VERSION_TAG, ""),
                "grade": tags.get(GRADE_TAG, ""),
                "judge_prompt_sha256": tags.get(JUDGE_PROMPT_TAG, ""),
                "answer": _answer(trace.info.response_preview),
            }
        )
    return {
        "model": model,
        "alias": alias,
        "version": version,
        "run_id": traced.info.run_id,
        "run_name": traced.info.run_name,
        "experiment_id": traced.info.experiment_id,
        "filter": flt,
        "traces": rows,
    }


def _answer(preview: str | None) -> str:
    """The answer a span's output preview holds (JSON text of a string, or the text)."""
    import json

    try:
        value = json.loads(preview or "")
    except ValueError:
        return preview or ""
    return value if isinstance(value, str) else json.dumps(value)


def ui_url(tracking_uri: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment's traces."""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/traces"


def answered_by(found: dict) -> list[tuple[str, str, list[dict]]]:
    """The traced answers by who gave them, the version itself first, then the champion it
    was compared with, then the bare base: (who, slot, answers) for each slot that answered."""
    version = str(found["version"])
    groups: dict[str, list[dict]] = {}
    for row in found["traces"]:
        groups.setdefault(row["slot"], []).append(row)

    def rank(slot: str) -> tuple[int, str]:
        served = str(groups[slot][0]["version"])
        return (0 if served == version else 2 if served in ("", "none") else 1, slot)

    out = []
    for slot in sorted(groups, key=rank):
        served = str(groups[slot][0]["version"])
        if served == version:
            who = f"{show_version(version)} itself"
        elif served in ("", "none"):
            who = "the bare base"
        else:
            who = f"the champion {show_version(served)}"
        out.append((who, slot, groups[slot]))
    return out


def lines(found: dict, tracking_uri: str) -> list[str]:
    """``mlcp traces`` for people: a header, who answered how often (the version's own
    answers first), one line per traced answer in that order, where to look."""
    rows = found["traces"]
    by = answered_by(found)
    own = sum(len(answers) for who, _, answers in by if who.endswith(" itself"))
    counts = [f"{len(answers)} by {who} ({slot})" for who, slot, answers in by]
    if not own:  # say so: the version's own answers are what a reader looks for first
        counts.insert(0, f"0 by {show_version(found['version'])} itself")
    out = [
        f"{found['model']}@{found['alias']} = {show_version(found['version'])}: "
        f"{len(rows)} traced answers of run {found['run_name']} ({found['run_id']}): "
        + ", ".join(counts),
        f"filter: {found['filter']}",
    ]
    if rows:
        width = max(len(r["slot"]) for r in rows)
        out.append(f"{'sample':<12} {'slot':<{width}} {'version':<8} {'grade':<8} answer")
        for _, _, answers in by:
            for r in answers:
                out.append(
                    f"{r['sample_id']:<12} {r['slot']:<{width}} {r['version']:<8} "
                    f"{r['grade']:<8} {r['answer']!r}  [{r['trace_id']}]"
                )
    out.append(
        f"in the MLflow UI: {ui_url(tracking_uri, found['experiment_id'])} "
        f"(search: {found['filter']})"
    )
    return out
