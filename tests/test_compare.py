"""`lab compare`: bad input, and (with Docker) the acceptance runs of issue 5: the five
entry comparison with its controls, SIGINT mid-run, a broken entry as an error row, a
harness past its wall-clock limit, and nothing labelled left behind."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.orchestrate import catalog
from lab.orchestrate.run import LABEL_RUN_ID, RunError

ROOT = Path(__file__).resolve().parent.parent


def lab(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False, env=env)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["python", "nginx"], "unknown implementation nginx; known: eio-uring"),
        (["python", "--jobs", "0"], "--jobs must be at least 1"),
        (["python", "--trials", "0"], "--trials must be at least 1"),
        (["python", "--until", "zz9"], "unknown stage"),
        ([], "name implementations or use --all"),
        (["--all", "python"], "either --all or implementation names"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], says: str) -> None:
    done = lab("compare", *args, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_unreachable_engine_is_exit_2() -> None:
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}
    done = lab("compare", "python", env=env, timeout=60)
    assert done.returncode == 2
    assert "cannot reach the Docker engine at unix:///nonexistent.sock" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_resolve_names_keeps_order_and_drops_duplicates() -> None:
    from lab.orchestrate import compare

    known = compare.load_catalog()
    assert compare.resolve_names(["redis", "python", "redis"], False, known) == ["redis", "python"]
    assert compare.resolve_names([], True, known) == list(catalog.ENTRIES)
    with pytest.raises(RunError):
        compare.resolve_names(["nope"], False, known)


# --- with Docker ---------------------------------------------------------------------

def ensure_images(names: list[str]) -> None:
    from tests.test_run import ensure_images as build

    build(names)


def labelled(run_id: str | None = None) -> list[str]:
    import docker

    label = f"{LABEL_RUN_ID}={run_id}" if run_id else LABEL_RUN_ID
    client = docker.from_env()
    return [c.name for c in client.containers.list(all=True, filters={"label": label})]


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.docker
@pytest.mark.slow
def test_compare_five_controls_pass_ghost_caught(tmp_path: Path) -> None:
    from lab.report import aggregate

    names = ["python", "python-ghost", "redis", "eio-posix", "eio-uring"]
    ensure_images(names)
    out = tmp_path / "run"
    done = lab("compare", *names, "--trials", "2", "--seed", "11", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = summary_of(out)
    assert summary["kind"] == "compare" and summary["controls"]["ok"] is True
    # The documented format (SCHEMA.md), key for key.
    assert {"schema_version", "kind", "run_id", "started_at", "finished_at", "command", "options",
            "fingerprint", "entries", "controls"} <= set(summary)
    assert {"trials", "order", "seed", "jobs", "pin"} <= set(summary["options"])
    assert summary["options"]["trials"] == 2 and summary["options"]["seed"] == 11
    assert {"kernel", "docker", "compose", "cores", "lab_revision", "python", "host"} <= set(
        summary["fingerprint"])
    for entry in summary["entries"].values():
        assert {"status", "error", "image", "image_labels", "seccomp", "needs_io_uring", "expected",
                "result_file", "log_file", "wall_s", "overhead_s"} <= set(entry)
    assert set(summary["entries"]) == set(names)
    for name in names:
        entry = summary["entries"][name]
        assert entry["status"] == "ok", entry
        assert entry["result_file"] == f"{name}.json" and (out / entry["result_file"]).is_file()
        assert (out / entry["log_file"]).is_file()
        assert entry["seccomp"] == ("unconfined" if catalog.get(name).needs_io_uring else "default")
    fp = summary["fingerprint"]
    assert fp["kernel"] and fp["docker"] and fp["cores"] >= 1 and "compose" in fp
    assert summary["entries"]["python"]["image_labels"].get("lab.version.python")
    rows = {r.implementation: r for r in aggregate.rows_from_run_dir(out)}
    assert len(rows) == 5
    ghost = json.loads((out / "python-ghost.json").read_text())
    kinds = [s["handoff"]["kind"] for t in ghost["trials"] for s in t["stages"] if s["handoff"]]
    assert "ghost" in kinds
    # The table has one line per implementation.
    table_lines = [line for line in done.stdout.splitlines() if line.split(" ")[0] in names]
    assert sorted({line.split(" ")[0] for line in table_lines}) == sorted(names)
    assert labelled(summary["run_id"]) == []


@pytest.mark.docker
def test_sigint_removes_containers_and_keeps_finished_trials(tmp_path: Path) -> None:
    names = ["python", "redis"]
    ensure_images(names)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "lab", "compare", *names, "--trials", "50",
                             "--out", str(out), "--no-build"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        # Wait until a trial has finished somewhere, so there is something to keep.
        while time.monotonic() < deadline:
            results = [out / f"{n}.json" for n in names if (out / f"{n}.json").is_file()]
            if any(len(json.loads(p.read_text())["trials"]) >= 2 for p in results):
                break
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        else:
            pytest.fail("no trial finished within 120 s")
        run_id = summary_of(out)["run_id"]
        assert labelled(run_id), "the compare should be running containers now"
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        while labelled(run_id) and time.monotonic() - sent < 10:
            time.sleep(0.2)
        assert labelled(run_id) == [], "labelled containers left 10 s after SIGINT"
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output
    summary = summary_of(out)
    for name in names:
        assert summary["entries"][name]["status"] == "interrupted"
        if summary["entries"][name]["result_file"]:
            result = json.loads((out / f"{name}.json").read_text())
            finished = [t for t in result["trials"] if len(t["stages"]) == len(t["order"])]
            assert all("passed" in s for t in finished for s in t["stages"])
    assert any(summary["entries"][n]["result_file"] for n in names)


@pytest.mark.docker
def test_broken_entry_is_an_error_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Dockerfile that fails becomes that entry's row; the others complete."""
    from rich.console import Console

    from lab.orchestrate import compare
    from lab.report import aggregate

    ensure_images(["python"])
    dockerfile = tmp_path / "broken.Dockerfile"
    dockerfile.write_text("FROM handoff-lab/base-runtime:latest\nRUN echo about to fail && false\n")
    image = "handoff-lab/test-broken"
    monkeypatch.setitem(catalog.IMAGES, image, catalog.ImageRecipe(image, str(dockerfile), "broken"))
    monkeypatch.setitem(catalog.ENTRIES, "broken", catalog.Entry(
        "broken", image, ("false",), "a Dockerfile that fails", expected="pass", role="subject"))
    known = compare.load_catalog()
    options = compare.CompareOptions(names=["python", "broken"], trials=1, until="rg2",
                                     out=tmp_path / "run", seed=2, argv=["test"])
    console = Console(file=io.StringIO(), width=200)
    result = compare.run_compare(options, known, console=console)
    assert result.exit_code == 1  # an entry faulted: the comparison is incomplete
    entries = result.summary["entries"]
    assert entries["broken"]["status"] == "error" and "build failed" in entries["broken"]["error"]
    assert "about to fail" in (tmp_path / "run" / "logs" / "broken.log").read_text()
    assert entries["python"]["status"] == "ok"
    rows = {r.implementation: r for r in aggregate.rows_from_run_dir(tmp_path / "run")}
    assert rows["broken"].is_error and not rows["python"].is_error
    assert rows["python"].stages_run == 2
    assert labelled(result.run_id) == []


@pytest.mark.docker
def test_harness_past_its_limit_is_an_error_row(tmp_path: Path) -> None:
    ensure_images(["python"])
    out = tmp_path / "run"
    done = lab("compare", "python", "--trials", "40", "--timeout", "6", "--out", str(out),
               "--no-build")
    assert done.returncode == 1, done.stdout + done.stderr
    entry = summary_of(out)["entries"]["python"]
    assert entry["status"] == "error" and "timed out" in entry["error"]
    assert entry["wall_s"] < 6 + 10
    assert "timed out" in done.stdout
    assert labelled(summary_of(out)["run_id"]) == []


@pytest.mark.docker
def test_lab_clean_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    import uuid

    import docker

    ensure_images(["python"])
    client = docker.from_env()
    run_id = f"test-clean-{uuid.uuid4().hex[:8]}"
    labels = {LABEL_RUN_ID: run_id, "lab.impl": "python"}
    container = client.containers.run(
        "handoff-lab/python", entrypoint=["python3", "-c", "import time; time.sleep(120)"],
        command=[], labels=labels, detach=True, network_mode="none", name=f"lab-{run_id}")
    network = client.networks.create(f"lab-{run_id}", labels=labels)
    volume = client.volumes.create(f"lab-{run_id}", labels=labels)
    try:
        done = lab("clean", "--run-id", run_id, timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"removed container lab-{run_id}" in done.stdout
        assert f"removed network lab-{run_id}" in done.stdout
        assert f"removed volume lab-{run_id}" in done.stdout
        assert labelled(run_id) == []
        assert not client.networks.list(filters={"label": f"{LABEL_RUN_ID}={run_id}"})
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
        with contextlib.suppress(docker.errors.APIError):
            network.remove()
        with contextlib.suppress(docker.errors.APIError):
            volume.remove(force=True)
