"""Result files: whole or absent, and readable by whoever reads them on the host."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from lab.harness.results import write_json_atomic


def test_result_file_is_world_readable(tmp_path: Path) -> None:
    # Inside a container the harness writes as uid 1000; the host reads the staged file as
    # another user (a CI runner is uid 1001), so 0600 would make every result unreadable.
    path = tmp_path / "result.json"
    write_json_atomic(str(path), {"a": 1})
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & stat.S_IROTH and mode & stat.S_IRGRP, oct(mode)


def test_rewrite_replaces_the_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    write_json_atomic(str(path), {"trials": [1, 2, 3]})
    write_json_atomic(str(path), {"trials": [1]})
    assert json.loads(path.read_text()) == {"trials": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
