"""`lab history`: the runs under results/, and marks against a baseline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab.report import merge
from lab.report.aggregate import rows_from_groups
from lab.report.synth import with_profile, write_run_dir


def lab_history(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.commands.history_cmd", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False)


def cell(output: str, run_id: str, column: str) -> str:
    """The text of one cell of the history table (columns are whitespace-aligned)."""
    lines = output.splitlines()
    header = next(ln for ln in lines if ln.startswith("run "))
    row = next(ln for ln in lines if ln.startswith(run_id))
    start = header.index(column)
    following = [header.index(c) for c in header.split() if header.index(c) > start]
    end = min(following) if following else len(row)
    return row[start:end].strip()


def test_history_lists_every_run_with_date_revision_entries_and_pass_rates(
        tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_run_dir(results, "20261201T000000Z", trials=4, seed=1,
                  fingerprint={"lab_revision": "abc1234"})
    write_run_dir(results, "20261202T000000Z", impls=["redis", "eio-uring"], trials=4,
                  seed=2, fingerprint={"lab_revision": "def5678"})
    proc = lab_history("--results", results)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    first = next(ln for ln in out.splitlines() if ln.startswith("20261201T000000Z"))
    second = next(ln for ln in out.splitlines() if ln.startswith("20261202T000000Z"))
    assert "2026-12-01T00:00:00Z" in first and "abc1234" in first and " 11 " in first
    assert "def5678" in second and " 2 " in second
    assert cell(out, "20261201T000000Z", "redis") == "100%"
    assert cell(out, "20261202T000000Z", "python") == ""  # not in that run
    assert out.index("20261201T000000Z") < out.index("20261202T000000Z")  # oldest first


def test_history_baseline_marks_only_the_regressed_entry(tmp_path: Path) -> None:
    results = tmp_path / "results"
    baseline = write_run_dir(tmp_path / "base", "20261130T000000Z", trials=20, seed=4)
    write_run_dir(results, "20261201T000000Z", trials=20, seed=4)
    write_run_dir(results, "20261202T000000Z", trials=20, seed=4,
                  profiles=with_profile("redis", ghost_probability=0.5, ghost_ms=3.0))
    proc = lab_history("--results", results, "--baseline", baseline, "--fail-on-regression")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    out = proc.stdout
    assert cell(out, "20261202T000000Z", "redis").endswith("!")
    marked = [ln for ln in out.splitlines() if ln.startswith("2026") and "!" in ln]
    assert len(marked) == 1 and marked[0].count("!") == 1
    assert "!" not in next(ln for ln in out.splitlines() if ln.startswith("20261201T"))
    assert "regressions beyond noise: redis;" in out
    assert "Wilson" in out


def test_history_without_results_is_a_one_line_error(tmp_path: Path) -> None:
    proc = lab_history("--results", tmp_path / "nowhere")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "nowhere" in proc.stderr


def test_parallel_loading_gives_the_same_rows_as_serial(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        write_run_dir(tmp_path, f"2026120{i + 1}T000000Z", trials=5, seed=i)

    def rows() -> list[dict[str, object]]:
        runs, problems = merge.load_inputs([tmp_path])
        assert not problems
        return [r.to_dict(samples=True) for r in rows_from_groups(merge.merge(runs))]

    monkeypatch.setattr(merge, "PARALLEL_BYTES", 10**12)
    serial = rows()
    monkeypatch.setattr(merge, "PARALLEL_BYTES", 0)
    assert rows() == serial
