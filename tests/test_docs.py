"""The documentation cannot drift from the code.

- The site builds with ``mkdocs build --strict``: a broken link, a missing page or a page
  left out of the nav fails.
- The reference pages (``docs/reference/``) are generated (``steps/docs.py``, ``make docs``):
  they must equal what the code renders now, and name every flag the parser takes. The flag
  check reads the parser's actions and parses the page's usage lines itself, so it does not
  trust the renderer it checks.
- Every shell command in a tutorial is either run by a test or marked as an example: a
  fenced block written ```` ```{ .bash .example } ```` is an example (commands to adapt: a
  demo that takes minutes, a cluster), any other shell block is run by
  :func:`test_the_rollback_tutorial_runs_as_written` (the only tutorial whose commands a
  test runs as written; a new unmarked block elsewhere fails
  :func:`test_every_tutorial_shell_command_is_run_by_a_test_or_marked_an_example`).
- The README stays short, and every link in it resolves.

Only the rollback tutorial needs the stack.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from steps import docs
from steps.cli import build_parser
from steps.cv.pipeline import CV
from steps.spec.pipelines import PIPELINES

from .conftest import ROOT, unique

README = ROOT / "README.md"
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
TUTORIALS = DOCS / "tutorials"
MKDOCS = [sys.executable, "-m", "mkdocs"]
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.DOTALL | re.MULTILINE)
SHELL = {"bash", "sh", "shell", "console", ""}
# The tutorial whose unmarked shell blocks a test runs as written (but for the model name).
RUN_BY_TESTS = {"rollback.md"}


def build_site(config, out, cwd=ROOT):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [*MKDOCS, "build", "--strict", "-f", str(config), "-d", str(out)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


# ------------------------------------------------------------------ the site


def test_the_site_builds_strictly(tmp_path):
    done = build_site(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    for page in ("index.html", "reference/cli/index.html", "tutorials/rollback/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    # the benchmarks page includes BENCHMARKS.md itself, and search indexes every page
    bench = (tmp_path / "site/benchmarks/index.html").read_text()
    first = BENCHMARKS_FIRST_FIGURE_LINE()
    assert first in bench
    index = (tmp_path / "site/search/search_index.json").read_text()
    for found in ("roll back", "mlflow.auth.enabled", "accuracy-vs-champion"):
        assert found in index.lower() or found in index, found


def BENCHMARKS_FIRST_FIGURE_LINE() -> str:
    """A line of BENCHMARKS.md's prose, to find it in the built page."""
    text = (ROOT / "BENCHMARKS.md").read_text()
    return next(line for line in text.splitlines()[2:] if len(line) > 40 and "`" not in line)


def site_copy(tmp_path):
    """The docs and the config copied, to plant a fault in (snippets read from the root)."""
    shutil.copytree(DOCS, tmp_path / "docs")
    config = (
        (ROOT / "mkdocs.yml")
        .read_text()
        .replace("docs_dir: docs", f"docs_dir: {tmp_path / 'docs'}")
    )
    (tmp_path / "mkdocs.yml").write_text(config)
    return tmp_path / "mkdocs.yml", tmp_path / "docs"


@pytest.mark.parametrize(
    "fault",
    ["a broken link", "a broken anchor", "a page out of the nav"],
)
def test_the_strict_build_fails_on_a_broken_link_or_a_stray_page(tmp_path, fault):
    config, copy = site_copy(tmp_path)
    page = copy / "tutorials" / "rollback.md"
    if fault == "a broken link":
        page.write_text(page.read_text() + "\nSee [nowhere](../how-to/nowhere.md).\n")
    elif fault == "a broken anchor":
        page.write_text(page.read_text() + "\nSee [the gates](../concepts/gates.md#nowhere).\n")
    else:
        (copy / "how-to" / "stray.md").write_text("# Stray\n")
    done = build_site(config, tmp_path / "site")
    assert done.returncode != 0, fault
    assert "nowhere" in done.stderr or "stray.md" in done.stderr, done.stderr[-2000:]


# ------------------------------------------------------------------ generated pages


def test_generated_pages_equal_what_the_code_renders():
    problems = docs.differences()
    assert not problems, "\n".join(problems) + "\nrun `make docs`"


MARKED = re.compile(r"^```text\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def leaf_commands(parser, words=()):
    """(words, parser) of every command that takes flags, e.g. (("cv", "perf-test"), p)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(words, parser)]
    return [
        found
        for action in subs
        for name, child in action.choices.items()
        for found in leaf_commands(child, (*words, name))
    ]


def usage_entries(text: str) -> dict[str, str]:
    """The page's usage lines inside its usage blocks: ``{"mlcp cv perf-test ...": entry}``
    with continuation lines joined to the line that starts the entry."""
    entries: dict[str, str] = {}
    current = None
    for body in MARKED.findall(text):
        for line in body.splitlines():
            if line.startswith("mlcp "):
                current = line
                entries[current] = line
            elif current is not None and line.startswith(" ") and line.strip():
                entries[current] += " " + line.strip()
            else:
                current = None
    return entries


def entry_for(entries: dict[str, str], words: tuple[str, ...]) -> str | None:
    head = "mlcp " + " ".join(words)
    found = [e for e in entries.values() if e == head or e.startswith(head + " ")]
    return found[0] if len(found) == 1 else None


def missing_flags(text: str) -> list[str]:
    """Every ``mlcp <command> FLAG`` the parser takes that the page's usage leaves out, and
    every command without a section of its own."""
    entries = usage_entries(text)
    missing = []
    for words, parser in leaf_commands(build_parser()):
        if f"\n### mlcp {' '.join(words)}\n" not in text:
            missing.append(f"mlcp {' '.join(words)} (no section)")
        entry = entry_for(entries, words)
        if entry is None:
            missing.append(f"mlcp {' '.join(words)} (no usage line)")
            continue
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if action.option_strings:
                shown = [
                    f
                    for f in action.option_strings
                    if re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", entry)
                ]
                if not shown:
                    missing.append(f"mlcp {' '.join(words)} {action.option_strings[-1]}")
            else:
                name = action.metavar or "|".join(action.choices or ()) or action.dest
                if name not in entry:
                    missing.append(f"mlcp {' '.join(words)} {name}")
    return missing


def cli_page() -> str:
    return (REFERENCE / "cli.md").read_text()


def test_every_flag_of_every_command_is_in_the_cli_reference():
    assert missing_flags(cli_page()) == []


def drifted(text: str) -> str:
    """The page with one flag dropped from the cv perf-test usage (a hand edit, or a flag
    added to the code after the last `make docs`)."""
    flag = " [--min-rps-ratio 0.67]"
    assert text.count(flag) >= 1
    return text.replace(flag, "", 1)  # the cv pipeline's, the first on the page


def test_the_checks_detect_a_drifted_page(tmp_path):
    shutil.copytree(DOCS, tmp_path / "docs")
    page = tmp_path / "docs" / "reference" / "cli.md"
    page.write_text(drifted(page.read_text()))
    problems = docs.differences(tmp_path / "docs")
    assert len(problems) == 1 and problems[0].startswith("differs: reference/cli.md")
    assert "+" in problems[0] and "--min-rps-ratio" in problems[0]
    assert missing_flags(page.read_text()) == ["mlcp cv perf-test --min-rps-ratio"]


def test_the_checks_detect_a_missing_and_a_stale_page(tmp_path):
    shutil.copytree(DOCS, tmp_path / "docs")
    (tmp_path / "docs" / "reference" / "gates.md").unlink()
    (tmp_path / "docs" / "reference" / "old.md").write_text("# Old\n")
    problems = docs.differences(tmp_path / "docs")
    assert "missing: reference/gates.md" in problems
    assert "not generated (stale): reference/old.md" in problems


def test_check_exits_1_and_a_rewrite_fixes_only_the_generated_pages(tmp_path, capsys):
    shutil.copytree(DOCS, tmp_path / "docs")
    page = tmp_path / "docs" / "reference" / "cli.md"
    hand = tmp_path / "docs" / "concepts" / "gates.md"
    hand.write_text(hand.read_text() + "\nA line written by hand.\n")
    current = page.read_text()
    page.write_text(drifted(current))
    assert docs.main(["--check", "--docs", str(tmp_path / "docs")]) == 1
    err = capsys.readouterr().err
    assert "differs: reference/cli.md" in err and "make docs" in err
    assert page.read_text() == drifted(current)  # --check changes nothing
    assert docs.main(["--docs", str(tmp_path / "docs")]) == 0
    assert page.read_text() == current
    assert hand.read_text().endswith("A line written by hand.\n")  # not generated: kept
    assert docs.main(["--check", "--docs", str(tmp_path / "docs")]) == 0


@pytest.mark.parametrize("p", PIPELINES, ids=lambda p: p.name)
def test_the_gate_reference_names_every_gate_and_the_flags_that_set_it(p):
    rows = (REFERENCE / "gates.md").read_text().splitlines()
    for stage in p.stages:
        for gate, opts in docs.gate_flags(stage).items():
            row = [r for r in rows if r.startswith(f"| {p.name} | {stage.name} | `{gate}` |")]
            assert len(row) == 1, f"{p.name} {stage.name}: no row for {gate}"
            assert opts, f"{p.name} {stage.name}: no option sets the thresholds of {gate}"
            assert all(f"`{o.flag} " in row[0] for o in opts)
            checks = [r for r in rows if r.startswith(f"- **`{gate}`** (`mlcp {p.name} ")]
            assert len(checks) == 1, f"{gate}: no line saying what it checks"
    block = "\n".join(rows)
    assert f"`mlcp {p.name} chain` and the `{p.name}-pipeline` template" in block
    assert (ROOT / "charts/mlcp/files/workflows" / f"{p.name}-pipeline.yaml").is_file()


def test_the_cv_tutorial_names_the_cv_gates_the_chain_requires():
    """The hand-written sentence of the CV tutorial lists the CV gates: it must stay the list
    the chain and the template require."""
    text = (TUTORIALS / "cv-pipeline.md").read_text()
    listed = re.search(r"nine CV\s+gates \(([^)]*)\)", text)
    assert listed is not None
    assert tuple(re.findall(r"`([a-z0-9-]+)`", listed.group(1))) == CV.gates
    assert len(CV.gates) == 9


def test_the_template_reference_lists_every_parameter_with_its_default_and_enum():
    import yaml

    text = (REFERENCE / "templates.md").read_text()
    for path in sorted((ROOT / "charts/mlcp/files/workflows").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        section = text.split(f"\n## {doc['metadata']['name']}\n", 1)[1].split("\n## ", 1)[0]
        spec = doc["spec"].get("workflowSpec", doc["spec"])
        for param in (spec.get("arguments") or {}).get("parameters") or []:
            (row,) = [r for r in section.splitlines() if r.startswith(f"| `{param['name']}` |")]
            default = f"`{param['value']}`" if param.get("value") else None
            assert default is None or default in row, (path.name, param["name"])
            assert all(f"`{e}`" in row for e in param.get("enum", ())), (path.name, row)


def test_the_metrics_reference_and_operate_it_name_every_metric_and_the_true_defaults():
    from workflows import metrics
    from workflows.settings import Settings

    rows = {
        line.split("|")[1].strip(" `"): line
        for line in (REFERENCE / "metrics.md").read_text().splitlines()
        if line.startswith("| `argo_workflows_")
    }
    assert sorted(rows) == sorted(m.exported for m in metrics.METRICS)
    for metric in metrics.METRICS:
        row = rows[metric.exported]
        assert metric.kind in row and f"`{metric.example}`" in row, metric.name
        assert all(f"`{label}`" in row for label in metric.labels), metric.name
    operate = (DOCS / "how-to" / "operate.md").read_text()
    defaults = Settings()
    for value in (defaults.ttl_after_success, defaults.ttl_after_failure, defaults.pod_gc):
        assert str(value) in operate


def test_the_exit_code_reference_has_every_code_and_what_argo_retries():
    from steps.base.errors import EXIT_MEANINGS

    rows = [r for r in (REFERENCE / "exit-codes.md").read_text().splitlines() if r.startswith("| ")]
    codes = {int(r.split("|")[1]): r for r in rows if r.split("|")[1].strip().isdigit()}
    assert sorted(codes) == sorted(EXIT_MEANINGS)
    assert codes[1].endswith("| yes |")
    assert codes[2].endswith("| no |") and codes[3].endswith("| no |")
    assert "unknown model or alias" in codes[2]


def test_the_chart_values_reference_has_every_documented_value():
    text = (ROOT / "charts/mlcp/values.yaml").read_text()
    documented = sum(line.strip().startswith("# --") for line in text.splitlines())
    page = (REFERENCE / "chart-values.md").read_text()
    rows = [r for r in page.splitlines() if r.startswith("| `")]
    assert len(rows) == documented
    for key in ("image.repository", "mlflow.auth.enabled", "networkPolicy.enabled"):
        assert any(r.startswith(f"| `{key}` |") for r in rows), key


# ------------------------------------------------------------------ tutorials


def shell_blocks(path) -> list[tuple[bool, list[str]]]:
    """(marked as an example, its commands) of every shell block of a page; a command's
    continuation lines are joined, comments and blank lines dropped."""
    found = []
    for match in FENCE.finditer(path.read_text()):
        info = match.group("info").strip()
        classes = re.findall(r"\.([\w-]+)", info) if info.startswith("{") else [info]
        language = classes[0] if classes else ""
        if language not in SHELL:
            continue
        commands, current = [], ""
        for line in match.group("body").splitlines():
            line = re.sub(r"\s+#.*$", "", line) if not line.startswith("#") else ""
            current += line.rstrip("\\").strip() + " " if line.strip() else ""
            if current and not line.endswith("\\"):
                commands.append(current.strip())
                current = ""
        found.append(("example" in classes, commands))
    return found


def test_every_tutorial_shell_command_is_run_by_a_test_or_marked_an_example():
    unmarked = {
        path.name: [c for marked, commands in shell_blocks(path) if not marked for c in commands]
        for path in sorted(TUTORIALS.glob("*.md"))
    }
    assert {name for name, commands in unmarked.items() if commands} == RUN_BY_TESTS
    for name in RUN_BY_TESTS:  # what the test runs: mlcp commands only
        assert all(c.startswith("mlcp ") for c in unmarked[name]), unmarked[name]


def test_the_example_mark_and_unmarked_blocks_are_told_apart(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```{ .bash .example }\nmake demo   # a comment\n```\n\n"
        "```bash\nmlcp history \\\n  --model-name m\n```\n\n```text\nmlcp x\n```\n"
    )
    assert shell_blocks(page) == [(True, ["make demo"]), (False, ["mlcp history --model-name m"])]


@pytest.fixture
def tutorial_model(stack_env, client, tmp_path):
    """A model served by Triton with v1, v2, v3 promoted to live in turn (as three chains
    would leave it): live v3, previous v2."""
    from steps.registry import moves, promote

    from . import switching

    name = unique("tutorial-rollback")
    switching.register_onnx_versions(client, tmp_path, name, seeds=(1, 2, 3))
    for version in ("1", "2", "3"):
        moves.assign(name, "benchmarked", version, reason="test: a stage wrote it")
        promote.promote(name, "benchmarked", "live", reason=f"test: v{version} live")
    return name


def test_the_rollback_tutorial_runs_as_written(tutorial_model, mlcp, models):
    # given the tutorial's commands, on a model of its own in place of resnet18-digits
    blocks = shell_blocks(TUTORIALS / "rollback.md")
    commands = [c for marked, block in blocks if not marked for c in block]
    assert len(commands) == 5
    results = []
    for command in commands:
        words = shlex.split(command.replace("resnet18-digits", tutorial_model))
        assert words[0] == "mlcp"
        # when each runs, in the tutorial's order
        results.append(mlcp(*words[1:], timeout=300))
        assert results[-1].code == 0, (command, results[-1].out, results[-1].err[-2000:])
    history, dry, rollback, after, check = results
    # then what the tutorial says each shows holds
    assert "v2 -> v3" in history.out or "2 -> 3" in history.out, history.out
    assert "[dry-run] would move" in dry.out
    assert f"{tutorial_model} moved" in rollback.out
    assert models.aliases(tutorial_model)["live"] == "2"
    assert "tutorial: back to the version before" in after.out
    assert "serving agrees with the registry" in check.out


# ------------------------------------------------------------------ the README


def test_the_readme_is_short_keeps_the_two_commands_and_room_for_the_test_times():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 200
    start, end = lines.index("<!-- test-times:start -->"), lines.index("<!-- test-times:end -->")
    assert start < end and "## Tests" in lines[:start]
    # the ~40-line table the markers hold later still fits
    assert len(lines) - (end - start - 1) + 40 <= 200
    assert "make demo    # the main job" in text and "make test    # the tests" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text().splitlines()  # what it names
    assert "minutes" in text and "make stack-down" in text and ".venv/bin/mlcp" in text


def test_every_link_in_the_readme_resolves():
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) > 20
    missing = [
        link
        for link in links
        if not re.match(r"[a-z]+://", link) and not (ROOT / link.split("#")[0]).exists()
    ]
    assert missing == []
