"""Helpers for tests that run `lab test` as a user would: a subprocess, its output, its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


@dataclass
class LabRun:
    code: int
    stdout: str
    stderr: str
    result: dict[str, Any] | None

    @property
    def stages(self) -> list[dict[str, Any]]:
        assert self.result is not None
        return [s for t in self.result["trials"] for s in t["stages"]]

    def tester_lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith("[tester::")]


def env() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    return environment


def lab_test(args: list[str], server: list[str], tmp_path: Path, timeout: float = 300) -> LabRun:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "test", *args, "--json", str(out), "--", *server],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env(), check=False,
    )
    result = json.loads(out.read_text()) if out.exists() else None
    return LabRun(proc.returncode, proc.stdout, proc.stderr, result)


def python_server(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "python_server", "--port", str(port), *extra]


def fixture(name: str, port: int) -> list[str]:
    return [sys.executable, str(FIXTURES / f"{name}.py"), "--port", str(port)]
