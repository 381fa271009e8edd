"""Golden logs: the suite against servers broken on purpose, as the real tester is tested.

Each fixture breaks one behaviour; the tester lines of the run must equal the golden log
(ports replaced by PORT). Regenerate with LAB_UPDATE_GOLDEN=1 and read the diff.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.harness_util import ROOT, fixture, lab_test

GOLDEN = ROOT / "tests" / "golden"

CASES = [
    # fixture, stages, the message the user must see
    ("never_binds", "rg2", "Failed to connect to port PORT"),
    ("no_crlf", "rg2", "Error: Expected \\r\\n at the end of a simple string"),
    ("bulk_pong", "rg2", 'Expected simple string "PONG", got bulk string "PONG"'),
    ("first_ping_only", "wy1", 'Received: "" (no content received)'),
    ("extra_data", "rg2", 'Error: Found extra data: "+PONG\\r\\n"'),
    ("slow_exit", "rg2", "program failed to exit in 2 seconds after receiving sigterm"),
    ("slow_replies", "zu2", "timed out, test exceeded 10 seconds"),
]


def normalise(lines: list[str], port: int) -> str:
    """Replace what differs between machines: the port, the interpreter, the checkout."""
    replaced = (
        line.replace(sys.executable, "python").replace(str(ROOT), "<root>").replace(str(port), "PORT")
        for line in lines
    )
    return "\n".join(replaced) + "\n"


@pytest.mark.parametrize(("name", "stages", "message"), CASES, ids=[c[0] for c in CASES])
def test_golden_log(name: str, stages: str, message: str, port: int, tmp_path: Path) -> None:
    run = lab_test(["--port", str(port), "--stages", stages], fixture(name, port), tmp_path)
    got = normalise(run.tester_lines(), port)
    golden = GOLDEN / f"{name}.log"
    if os.environ.get("LAB_UPDATE_GOLDEN") == "1":
        golden.write_text(got)
    assert message in got
    assert got == golden.read_text(), f"tester output of {name} differs from {golden}"
    assert "Traceback" not in run.stderr
    stage = run.stages[0]
    if name == "slow_exit":
        # SIGKILL is recorded, not a test failure, exactly as the tester treats it.
        assert stage["passed"] and stage["sigkill"] and run.code == 0
        assert stage["teardown"]["sigkill"] is True
        assert stage["teardown"]["sigterm_to_exit_ms"] >= 2000
    else:
        assert not stage["passed"] and run.code == 1
        assert message.replace("PORT", str(port)) in stage["error"]


def test_silence_is_diagnosed_as_silence(port: int, tmp_path: Path) -> None:
    run = lab_test(["--port", str(port), "--stages", "wy1"], fixture("first_ping_only", port), tmp_path)
    stage = run.stages[0]
    assert stage["error"].startswith('Received: "" (no content received)')
    assert "never answered" in stage["diagnosis"]
