"""The row arithmetic, the control rules and the statistics behind the noise rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.report.aggregate import (
    GHOST_ZERO_MS,
    Row,
    backend_of,
    check_controls,
    percentile,
    rows_from_run_dir,
)
from lab.report.history import mann_whitney_p, wilson
from lab.report.synth import with_profile, write_run_dir
from lab.report.table import render_table


def clean(name: str, ghost: float) -> Row:
    return Row(implementation=name, impl=name, stages_run=7, stages_passed=7,
               ghost_ms=[0.01, ghost])


def test_backend_from_flags() -> None:
    assert backend_of([True, True, None]) == "io_uring"
    assert backend_of([False, False]) == "posix"
    assert backend_of([True, False]) == "mixed"
    assert backend_of([None, None]) == "unknown"
    assert backend_of([]) == "unknown"


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([0, 10], 95) == pytest.approx(9.5)
    assert percentile([], 50) is None


def test_clean_controls_allow_jitter_up_to_the_stated_tolerance() -> None:
    ghost_control = Row(implementation="python-ghost", impl="python-ghost", stages_run=2,
                        stages_passed=1, ghost_failures=1, handoffs=1,
                        handoff_kinds={"ghost": 1})
    ok = check_controls([clean("redis", GHOST_ZERO_MS), clean("python", 0.15), ghost_control])
    assert ok.ok, ok.problems
    assert any("0.2 ms counts as zero" in n for n in ok.notes)
    bad = check_controls([clean("redis", 0.5), clean("python", 0.0), ghost_control])
    assert not bad.ok
    assert bad.problems == ["redis (control) showed a ghost window of 0.50 ms (> 0.2 ms)"]


def test_clean_control_must_pass_every_stage() -> None:
    row = clean("python", 0.0)
    row.stages_passed = 6
    check = check_controls([row])
    assert not check.ok and "failed 1 of 7 stages" in check.problems[0]


def test_ghost_control_failures_must_be_classified_ghost() -> None:
    misclassified = Row(implementation="python-ghost", impl="python-ghost", stages_run=4,
                        stages_passed=2, handoffs=2, handoff_kinds={"refused": 2})
    check = check_controls([misclassified])
    assert not check.ok and "no failed handoff was classified ghost" in check.problems[0]


def test_absent_controls_are_noted_not_failed() -> None:
    check = check_controls([clean("eio-posix", 0.0)])
    assert check.ok
    assert any("not in these results" in n for n in check.notes)


def test_expected_outcome_disagreeing_is_a_surprise(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path, impls=["eio-uring", "lwt"], trials=5,
                        profiles=with_profile("eio-uring", ghost_probability=0.0, ghost_ms=0.0))
    rows = rows_from_run_dir(run)
    by = {r.impl: r for r in rows}
    assert by["eio-uring"].surprise is not None and "expected 'ghost'" in by["eio-uring"].surprise
    assert by["lwt"].surprise is None
    check = check_controls(rows)
    assert check.ok  # a surprise is not a control failure
    assert check.surprises and check.surprises[0].startswith("eio-uring:")
    assert "SURPRISE" in render_table(rows)


def test_rows_from_run_dir_counts_handoff_failures_by_kind(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path, impls=["eio-uring"], trials=8, profiles=with_profile(
        "eio-uring", ghost_probability=0.5, bind_failed_probability=0.3))
    (row,) = rows_from_run_dir(run)
    suite = json.loads((run / "eio-uring.json").read_text())
    stages = [s for t in suite["trials"] for s in t["stages"]]
    failed_kinds = [s["handoff"]["kind"] for s in stages if s["handoff"] and not s["passed"]]
    assert row.ghost_failures == failed_kinds.count("ghost")
    assert row.bind_failed_failures == failed_kinds.count("bind-failed")
    assert row.ghost_failures + row.bind_failed_failures > 0
    assert row.ghost_handoffs == sum(1 for s in stages if s["handoff"]
                                     and s["handoff"]["kind"] == "ghost")


def test_rows_from_run_dir_raises_one_line_for_a_bad_summary(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"schema_version": 1, "kind": "comp')
    with pytest.raises(ValueError, match=r"summary\.json: not valid JSON"):
        rows_from_run_dir(tmp_path)


def test_wilson_interval_known_values() -> None:
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))


def test_mann_whitney_separates_shifted_samples_and_not_equal_ones() -> None:
    a = [0.1 * i for i in range(30)]
    assert mann_whitney_p(a, list(a)) == pytest.approx(1.0)
    assert mann_whitney_p(a, [x + 5 for x in a]) < 1e-6
    assert mann_whitney_p([1.0] * 10, [1.0] * 10) == 1.0
    # By hand: rank sum of a = 25, U = 4, mean 18, tie-corrected variance 38.73,
    # z = (14 - 0.5) / 6.223 = 2.169, two-sided p = 0.0301.
    assert mann_whitney_p([1, 2, 3, 4, 5, 6], [4, 5, 7, 8, 9, 10]) == pytest.approx(0.0301,
                                                                                      abs=5e-4)


def test_a_listener_that_outlived_the_watch_is_counted_and_fails_a_clean_control(
        tmp_path: Path) -> None:
    # Its windows are None, so without the flag the worst teardown would simply vanish.
    run = write_run_dir(tmp_path, impls=["redis"], trials=2)
    result_path = run / "redis.json"
    suite = json.loads(result_path.read_text())
    teardown = suite["trials"][0]["stages"][2]["teardown"]
    teardown.update(sigterm_to_listener_gone_ms=None, ghost_ms=None, listener_outlived_watch=True)
    result_path.write_text(json.dumps(suite))
    (row,) = rows_from_run_dir(run)
    assert row.listeners_outlived_watch == 1
    assert any("still open when the teardown watch ended" in note for note in row.notes)
    check = check_controls([row])
    assert "redis (control): 1 listener(s) outlived the teardown watch" in check.problems
