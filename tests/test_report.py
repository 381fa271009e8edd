"""`lab report`: merging, baselines, the formats, and bad inputs (synthetic run dirs).

The run directories come from lab.report.synth, which writes them with the harness's own
result dataclasses; the expected sums are taken from each suite file's own `summary`
block (computed by lab.harness.results), not from the report code under test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from lab.report.synth import PROFILES, with_profile, write_run_dir

SCHEMA = Path(__file__).resolve().parent.parent / "lab" / "schema" / "report.schema.json"


def lab_report(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run `lab report` as a user would (through the module, so no console script is
    needed), capturing output."""
    return subprocess.run([sys.executable, "-m", "lab.commands.report_cmd", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False)


def report_json(*args: str | Path) -> dict[str, Any]:
    proc = lab_report(*args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def rows_by_impl(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["implementation"]: r for r in data["rows"]}


def suite_summaries(run_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in run_dir.glob("*.json"):
        if path.name != "summary.json":
            out[path.stem] = json.loads(path.read_text())["summary"]
    return out


def test_two_runs_merged_counts_equal_the_sums(tmp_path: Path) -> None:
    a = write_run_dir(tmp_path, "20261201T000000Z", trials=6, seed=1)
    b = write_run_dir(tmp_path, "20261202T000000Z", trials=9, seed=2)
    rows = rows_by_impl(report_json(a, b))
    sa, sb = suite_summaries(a), suite_summaries(b)
    assert set(rows) == set(PROFILES)
    for impl, row in rows.items():
        for key in ("stages_run", "stages_passed", "trials_run", "trials_all_passed",
                    "sigkill_escalations"):
            assert row[key] == sa[impl][key] + sb[impl][key], (impl, key)
        ghosts = sa[impl]["handoff_kinds"].get("ghost", 0) + sb[impl]["handoff_kinds"].get(
            "ghost", 0)
        assert row["ghost_handoffs"] == ghosts
        assert row["runs"] == 2
        assert row["pass_rate"] == pytest.approx(row["stages_passed"] / row["stages_run"])


def test_ci_shards_merge_into_one_table(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    for impl in ("redis", "python", "python-ghost", "eio-uring"):
        write_run_dir(shards / f"shard-{impl}", "20261203T000000Z", impls=[impl], trials=3)
    data = report_json(shards)
    assert sorted(rows_by_impl(data)) == ["eio-uring", "python", "python-ghost", "redis"]
    assert len(data["inputs"]) == 4
    assert data["controls"]["ok"], data["controls"]


def test_same_implementation_on_two_machines_stays_two_rows(tmp_path: Path) -> None:
    a = write_run_dir(tmp_path, "a", impls=["redis"], trials=2, fingerprint={"host": "one"})
    b = write_run_dir(tmp_path, "b", impls=["redis"], trials=2, fingerprint={"host": "two"})
    assert sorted(rows_by_impl(report_json(a, b))) == ["redis @ one", "redis @ two"]


def test_rows_broken_first_and_backend_from_the_io_uring_flag(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path, trials=5, profiles={
        **with_profile("lwt", status="error", error="build failed: exit 1")})
    rows = report_json(run)["rows"]
    assert rows[0]["implementation"] == "lwt" and rows[0]["status"] == "error"
    rates = [r["pass_rate"] for r in rows[1:]]
    assert rates == sorted(rates)
    by = rows_by_impl({"rows": rows})
    assert by["eio-uring"]["backend"] == "io_uring"
    assert by["eio-posix"]["backend"] == "posix"


def test_error_entry_is_a_row_with_its_error_and_log(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path, trials=2, profiles=with_profile(
        "lwt", status="error", error="Dockerfile step 3 failed"))
    proc = lab_report(run)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("lwt "))
    assert "ERROR: Dockerfile step 3 failed" in line
    assert str(run / "logs" / "lwt.log") in line
    # Every other implementation still has its row.
    for impl in PROFILES:
        assert any(ln.startswith(impl + " ") for ln in proc.stdout.splitlines()), impl


def test_baseline_with_lower_pass_rate_for_one_entry_flags_that_entry_only(
        tmp_path: Path) -> None:
    current = write_run_dir(tmp_path, "current", trials=20, seed=3)
    worse = write_run_dir(tmp_path, "worse", trials=20, seed=3, profiles=with_profile(
        "lwt", ghost_probability=0.6, ghost_ms=4.0))
    # The baseline had the lower pass rate: lwt improved, nothing regressed.
    data = report_json(current, "--baseline", worse)
    statuses = {c["implementation"]: c["status"] for c in data["baseline"]["comparisons"]}
    assert statuses.pop("lwt") == "improvement"
    assert set(statuses.values()) == {"same"}, statuses
    # The other way round it is a regression, for lwt only, and the gate fails.
    data = report_json(worse, "--baseline", current)
    statuses = {c["implementation"]: c["status"] for c in data["baseline"]["comparisons"]}
    assert statuses.pop("lwt") == "regression"
    assert set(statuses.values()) == {"same"}, statuses
    proc = lab_report(worse, "--baseline", current, "--fail-on-regression")
    assert proc.returncode == 4
    assert "regressions beyond noise: lwt" in proc.stdout
    assert "Wilson" in proc.stdout and "Mann-Whitney" in proc.stdout  # the rule is stated


def test_identical_runs_show_no_regression(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path, "a", trials=10, seed=5)
    copy = tmp_path / "b"
    shutil.copytree(run, copy)
    proc = lab_report(run, "--baseline", copy, "--fail-on-regression")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "regressions beyond noise: none; improvements: none" in proc.stdout


def test_noise_is_not_a_regression(tmp_path: Path) -> None:
    """Two runs of the same flaky profile with different seeds differ, but within noise."""
    a = write_run_dir(tmp_path, "a", impls=["eio-uring-reuseport"], trials=30, seed=1)
    b = write_run_dir(tmp_path, "b", impls=["eio-uring-reuseport"], trials=30, seed=2)
    data = report_json(a, "--baseline", b)
    (comparison,) = data["baseline"]["comparisons"]
    assert comparison["status"] == "same", comparison


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_markdown_renders_to_a_table_with_every_implementation(tmp_path: Path) -> None:
    from markdown_it import MarkdownIt

    run = write_run_dir(tmp_path, trials=4)
    out = tmp_path / "report.md"
    proc = lab_report(run, "--format", "markdown", "-o", out)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    parser = _TableParser()
    parser.feed(MarkdownIt("commonmark").enable("table").render(text))
    table = parser.tables[0]
    assert table[0][0] == "implementation" and "pass rate" in table[0]
    assert sorted(r[0] for r in table[1:]) == sorted(PROFILES)
    assert all(len(r) == len(table[0]) for r in table)  # no "|" split a cell
    # Fingerprint, the command that reproduces it, a failing timeline beside a passing one.
    assert "6.18.0-synthetic" in text
    assert "lab compare eio-uring" in text
    assert "| failing: t (ms) | event | passing: t (ms) | event |" in text
    assert "### python-ghost" in text
    # Which image ran each entry, under which seccomp mode, with which versions.
    images = next(t for t in parser.tables if t[0][:3] == ["implementation", "image", "seccomp"])
    modes = {r[0]: r[2] for r in images[1:]}
    assert sorted(modes) == sorted(PROFILES)
    assert modes["eio-uring"] == "unconfined" and modes["python"] == "default"


def test_json_validates_against_its_schema(tmp_path: Path) -> None:
    a = write_run_dir(tmp_path, "a", trials=3, profiles=with_profile("lwt", status="error",
                                                                       error="boom"))
    b = write_run_dir(tmp_path, "b", trials=3, seed=9)
    schema = json.loads(SCHEMA.read_text())
    data = report_json(a, b, "--baseline", b)
    jsonschema.validate(data, schema)
    assert data["schema_version"] == 1
    # The schema is not vacuous: a row without its pass rate is rejected.
    del data["rows"][0]["pass_rate"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_truncated_and_unknown_version_files_are_named_and_the_rest_reported(
        tmp_path: Path) -> None:
    good = write_run_dir(tmp_path, "good", impls=["redis", "python"], trials=2)
    truncated = write_run_dir(tmp_path, "truncated", impls=["lwt", "eio-posix"], trials=2)
    lwt_file = truncated / "lwt.json"
    lwt_file.write_text(lwt_file.read_text()[:500])
    future = write_run_dir(tmp_path, "future", impls=["eio-uring"], trials=2)
    summary = json.loads((future / "summary.json").read_text())
    summary["schema_version"] = 99
    (future / "summary.json").write_text(json.dumps(summary))
    proc = lab_report(good, truncated, future)
    assert proc.returncode == 0, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(errors) == 2, proc.stderr
    assert any(str(lwt_file) in ln and "truncated" in ln for ln in errors), errors
    assert any(str(future / "summary.json") in ln and "schema_version 99" in ln
               for ln in errors), errors
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    for impl in ("redis", "python", "eio-posix"):
        assert any(ln.startswith(impl + " ") and "/" in ln for ln in lines), impl
    lwt_line = next(ln for ln in lines if ln.startswith("lwt "))
    assert "unreadable result file" in lwt_line
    assert not any(ln.startswith("eio-uring ") for ln in lines)


def test_nothing_readable_is_a_one_line_error_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = lab_report(empty, tmp_path / "missing")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(empty) in proc.stderr and str(tmp_path / "missing") in proc.stderr


def test_fail_on_control_exit_3_when_the_ghost_control_is_not_caught(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path, impls=["redis", "python", "python-ghost"], trials=3,
                        profiles=with_profile("python-ghost", ghost_probability=0.0))
    proc = lab_report(run, "--fail-on-control")
    assert proc.returncode == 3
    assert "python-ghost (control) was not caught" in proc.stdout
    assert "CONTROLS FAILED" in proc.stdout
    healthy = write_run_dir(tmp_path, "ok", impls=["redis", "python", "python-ghost"],
                            trials=3)
    assert lab_report(healthy, "--fail-on-control").returncode == 0


def test_require_controls_fails_when_a_control_wrote_no_result(tmp_path: Path) -> None:
    # A nightly whose redis job died before writing a shard: without --require-controls
    # the missing control is only a note; with it, the gate fails.
    run = write_run_dir(tmp_path, impls=["python", "python-ghost", "eio-posix"], trials=2)
    assert lab_report(run, "--fail-on-control").returncode == 0
    proc = lab_report(run, "--require-controls", "--fail-on-control")
    assert proc.returncode == 3
    assert "controls missing from these results: redis" in proc.stdout
    complete = write_run_dir(tmp_path, "all", impls=["redis", "python", "python-ghost"], trials=2)
    assert lab_report(complete, "--require-controls", "--fail-on-control").returncode == 0


def test_a_fault_after_some_stages_is_shown_first_with_its_log_and_fails_a_control(
        tmp_path: Path) -> None:
    # redis's harness timed out after writing some trials: `lab compare` marks the entry
    # an error and keeps its partial result file.
    run = write_run_dir(tmp_path, impls=["redis", "python", "python-ghost", "lwt"], trials=2)
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["entries"]["redis"].update(status="error", error="the harness ran past its limit")
    summary_path.write_text(json.dumps(summary))
    proc = lab_report(run, "--fail-on-control")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "redis (control) faulted: the harness ran past its limit" in proc.stdout
    rows = [ln for ln in proc.stdout.splitlines() if ln.split(" ")[0] in ("redis", "python", "lwt")]
    assert rows[0].startswith("redis "), rows  # broken first, although every stage passed
    assert str(run / "logs" / "redis.log") in rows[0]
