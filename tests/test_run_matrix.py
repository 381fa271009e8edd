"""Issue-4 acceptance through `lab run`, as a runtime maintainer would check a matrix:
clean entries pass everything with the backend they claim, the real io_uring bug shows
up classified, the graceful server escalates exactly where clients stay connected, and
every OCaml variant passes each stage when the stage runs alone (no handoff)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab.orchestrate import catalog
from tests.test_run import ensure_images, lab

pytestmark = pytest.mark.docker

KEEPS_CLIENTS = {"rg2", "wy1", "zu2"}  # the tester kills the server before closing these


def run_json(tmp_path: Path, name: str, *suite: str) -> tuple[int, str, dict[str, Any]]:
    ensure_images([name])
    out = tmp_path / f"{name}.json"
    done = lab("run", name, *suite, "--json", str(out), timeout=600)
    assert out.exists(), done.stdout[-2000:] + done.stderr[-2000:]
    return done.returncode, done.stdout + done.stderr, json.loads(out.read_text())


def stages_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for t in result["trials"] for s in t["stages"]]


@pytest.mark.parametrize(
    ("name", "io_uring"),
    [("eio-posix", False), ("lwt", False), ("python", False), ("redis", False), ("eio-uring-prompt", True)],
)
def test_clean_entries_pass_every_stage_descending(tmp_path: Path, name: str, io_uring: bool) -> None:
    code, output, result = run_json(tmp_path, name, "--trials", "2")
    stages = stages_of(result)
    assert code == 0, output[-3000:]
    assert result["order"] == "descending" and len(stages) == 14
    assert all(s["passed"] for s in stages)
    assert all(s["io_uring"] is io_uring for s in stages), [s["io_uring"] for s in stages]
    assert not any(s["sigkill"] for s in stages)


def test_eio_uring_really_runs_io_uring_and_every_failure_is_classified(tmp_path: Path) -> None:
    code, _output, result = run_json(tmp_path, "eio-uring", "--trials", "5")
    stages = stages_of(result)
    # io_uring is null only where it could not be observed: the server was already dead at
    # the check because it lost the bind to the previous server's lingering listener
    # (FACTS.md section 3), or it was jm1, which passes on a dial the dying listener
    # accepted, before the new server has opened its ring or its listener.
    for stage in stages:
        if stage["io_uring"] is None:
            lost_bind = stage["handoff"]["evidence"]["bind_error_in_output"]
            jm1_on_ghost = stage["slug"] == "jm1" and stage["handoff"]["kind"] == "ghost"
            assert lost_bind or jm1_on_ghost, (stage["slug"], stage["server_output"])
        else:
            assert stage["io_uring"] is True, "eio-uring silently fell back to posix"
    assert any(s["io_uring"] is True for s in stages)
    failures = [s for s in stages if not s["passed"]]
    for stage in failures:
        assert stage["position"] > 1, "a trial's first stage has no handoff to lose"
        assert stage["handoff"]["kind"] in ("ghost", "bind-failed"), stage["handoff"]
        assert stage["diagnosis"].startswith(stage["handoff"]["kind"])
    assert code == (1 if failures else 0)
    ghosts = [s for s in stages if s["handoff"] and s["handoff"]["kind"] == "ghost"]
    for stage in ghosts:  # the evidence behind the word
        evidence = stage["handoff"]["evidence"]
        assert evidence["old_listener_alive_at_connect"] is True
        assert evidence["connected_us"] > evidence["previous_reaped_us"]
    print(f"eio-uring x5: {len(failures)}/{len(stages)} stages failed, {len(ghosts)} ghost handoffs")


def test_eio_uring_graceful_escalates_where_clients_stay_connected(tmp_path: Path) -> None:
    _code, _output, result = run_json(tmp_path, "eio-uring-graceful", "--trials", "1")
    for stage in stages_of(result):
        # FACTS.md section 3: run_server's stop waits for every handler, and the tester
        # keeps rg2/wy1/zu2's clients open while it kills, so only SIGKILL ends those.
        assert stage["sigkill"] is (stage["slug"] in KEEPS_CLIENTS), (stage["slug"], stage["sigkill"])
        if stage["sigkill"]:
            assert "program failed to exit in 2 seconds after receiving sigterm" in "\n".join(stage["log"])
            assert stage["teardown"]["sigterm_to_exit_ms"] >= 2000


ALONE = [(name, slug) for name, entry in catalog.ENTRIES.items() if entry.image == catalog.OCAML_IMAGE
         for slug in ("jm1", "rg2", "wy1", "zu2", "qq0", "la7", "yz1")]


@pytest.mark.parametrize("name", sorted({name for name, _ in ALONE}))
def test_every_ocaml_variant_passes_each_stage_alone(tmp_path: Path, name: str) -> None:
    for slug in ("jm1", "rg2", "wy1", "zu2", "qq0", "la7", "yz1"):
        code, output, result = run_json(tmp_path, name, "--stages", slug)
        (stage,) = stages_of(result)
        assert code == 0 and stage["passed"], (slug, stage["error"], output[-1500:])
        assert stage["io_uring"] is catalog.get(name).needs_io_uring
