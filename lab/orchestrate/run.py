"""Run one implementation's suite in a hardened, throw-away container.

The container's main process is docker-init, its child the harness (`python3 -m lab
test`), whose child is the server: SIGTERM reaches the server the way the tester sends
it, and `docker stop` reaches the harness, which writes its JSON as interrupted.

The result leaves the container through a bind-mounted staging directory (uid 1000 must
write it), not `get_archive` after the fact: a run that is killed still keeps every
stage the harness had written. The JSON is mirrored to its final place while the suite
runs, so a reader sees trials as they finish.

We never use `detach=True, remove=True`: docker-py can then lose the exit code and the
logs. The container is waited for, its logs drained, and removed by us.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

LABEL_RUN_ID = "lab.run-id"
LABEL_IMPL = "lab.impl"

# Hardening of every lab container (issue 5, section 6).
CONTAINER_USER = "1000:1000"  # the images' `lab` user; numeric so no passwd lookup can fail
PIDS_LIMIT = 256
MEM_LIMIT = "512m"
TMPFS = {"/tmp": "rw,nosuid,nodev,size=64m"}
CONTAINER_OUT = "/out"
HARNESS_ENTRYPOINT = ["python3", "-m", "lab", "test"]
# docker stop's grace before SIGKILL: the harness needs a moment to SIGTERM its server
# (which itself may take 2 s before the harness SIGKILLs it) and rewrite its JSON.
STOP_GRACE_S = 4
# A stage is bounded by the harness (10 s timeout + 2 s SIGKILL grace); the wall-clock
# limit only catches a harness or container that hangs.
STAGE_BUDGET_S = 14.0
STARTUP_BUDGET_S = 60.0
ALL_STAGES = 7

SeccompMode = str  # "default" | "unconfined" | "profile:<file>"


class RunError(Exception):
    """Bad input or an unusable engine: one line for the user, exit 2."""


@dataclass(frozen=True)
class Seccomp:
    mode: SeccompMode
    security_opt: tuple[str, ...]


def load_seccomp_profile(path: str | os.PathLike[str]) -> str:
    """Read a seccomp profile and return it compact, as the API takes it inline."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise RunError(f"cannot read seccomp profile {path}: {e.strerror}") from e
    try:
        profile = json.loads(text)
    except json.JSONDecodeError as e:
        raise RunError(f"seccomp profile {path} is not JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(profile, dict) or "defaultAction" not in profile:
        raise RunError(f"seccomp profile {path} has no defaultAction: not a Docker seccomp profile")
    return json.dumps(profile, separators=(",", ":"))


def seccomp_for(needs_io_uring: bool, profile_path: str | None = None) -> Seccomp:
    """The override applies only to entries that need io_uring; all others keep the
    engine's default profile (which on Docker >= 25 blocks io_uring)."""
    if not needs_io_uring:
        return Seccomp("default", ())
    if profile_path is None:
        return Seccomp("unconfined", ("seccomp=unconfined",))
    inline = load_seccomp_profile(profile_path)
    return Seccomp(f"profile:{profile_path}", ("seccomp=" + inline,))


def suite_args_from(
    *,
    port: int | None = None,
    order: str | None = None,
    seed: int | None = None,
    until: str | None = None,
    stages: str | None = None,
    trials: int | None = None,
    fail_fast: bool = False,
    timeline: bool = False,
) -> list[str]:
    """The `lab test` options to pass through to the harness in the container."""
    args: list[str] = []
    for flag, value in (
        ("--port", port),
        ("--order", order),
        ("--seed", seed),
        ("--until", until),
        ("--stages", stages),
        ("--trials", trials),
    ):
        if value is not None:
            args += [flag, str(value)]
    if fail_fast:
        args.append("--fail-fast")
    if timeline:
        args.append("--timeline")
    return args


def wall_clock_limit(trials: int, stages: int = ALL_STAGES) -> float:
    return STARTUP_BUDGET_S + max(1, trials) * max(1, stages) * STAGE_BUDGET_S


@dataclass
class RunRequest:
    impl: str
    image: str
    server_command: list[str]
    env: dict[str, str]
    needs_io_uring: bool
    suite_args: list[str]
    run_id: str
    staging_dir: Path  # bind-mounted at /out
    log_path: Path
    result_path: Path  # where the JSON is mirrored on the host
    seccomp: Seccomp
    timeout_s: float
    cpuset: str | None = None

    @property
    def container_result(self) -> str:
        return f"{CONTAINER_OUT}/{self.impl}.json"

    @property
    def staged_result(self) -> Path:
        return self.staging_dir / f"{self.impl}.json"


def container_name(run_id: str, impl: str) -> str:
    return f"lab-{run_id}-{impl}"


def create_kwargs(req: RunRequest) -> dict[str, Any]:
    """Everything `containers.create` gets: the hardening lives here, in one place."""
    kwargs: dict[str, Any] = {
        "image": req.image,
        "entrypoint": HARNESS_ENTRYPOINT,
        "command": [*req.suite_args, "--json", req.container_result, "--", *req.server_command],
        "name": container_name(req.run_id, req.impl),
        "labels": {LABEL_RUN_ID: req.run_id, LABEL_IMPL: req.impl},
        "environment": dict(req.env),
        "network_mode": "none",
        "init": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges", *req.seccomp.security_opt],
        "read_only": True,
        "tmpfs": dict(TMPFS),
        "user": CONTAINER_USER,
        "pids_limit": PIDS_LIMIT,
        "mem_limit": MEM_LIMIT,
        "volumes": {str(req.staging_dir.resolve()): {"bind": CONTAINER_OUT, "mode": "rw"}},
        "detach": True,
    }
    if req.cpuset is not None:
        kwargs["cpuset_cpus"] = req.cpuset
    return kwargs


@dataclass
class RunOutcome:
    impl: str
    status: str  # ok | error | interrupted
    error: str | None
    exit_code: int | None
    seccomp: SeccompMode
    result_path: Path | None
    log_path: Path
    wall_s: float
    overhead_s: float | None  # create + start + remove + final copy
    suite_s: float | None  # the suite's own run time, from its JSON
    all_passed: bool = False
    io_uring_blocked: bool = False
    result: dict[str, Any] | None = field(default=None, repr=False)
    overhead_parts: dict[str, float] = field(default_factory=dict)


def read_result(path: Path) -> dict[str, Any] | None:
    """The harness rewrites atomically, so a file is either absent or whole JSON."""
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def annotate(result: dict[str, Any], req: RunRequest) -> dict[str, Any]:
    """Record in the result how its container ran (the seccomp mode above all)."""
    env = result.setdefault("environment", {})
    if isinstance(env, dict):
        env["container"] = {
            "name": container_name(req.run_id, req.impl),
            "run_id": req.run_id,
            "image": req.image,
            "seccomp": req.seccomp.mode,
            "needs_io_uring": req.needs_io_uring,
            "cpuset": req.cpuset,
            "network": "none",
            "user": CONTAINER_USER,
            "read_only": True,
            "cap_drop": ["ALL"],
            "no_new_privileges": True,
            "pids_limit": PIDS_LIMIT,
            "mem_limit": MEM_LIMIT,
        }
    return result


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """A unique temporary name per write: two threads may rewrite the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are for everyone to read
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class ResultMirror:
    """Copies the staged JSON (written by uid 1000 in the container) to its final
    place, annotated, each time the harness rewrites it."""

    def __init__(self, req: RunRequest) -> None:
        self.req = req
        self._seen: tuple[int, int] | None = None
        self.latest: dict[str, Any] | None = None

    def sync(self) -> dict[str, Any] | None:
        try:
            st = self.req.staged_result.stat()
        except OSError:
            return self.latest
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp == self._seen:
            return self.latest
        data = read_result(self.req.staged_result)
        if data is None:
            return self.latest
        self._seen = stamp
        self.latest = annotate(data, self.req)
        write_json_atomic(self.req.result_path, self.latest)
        return self.latest


# How a forced io_uring backend dies when the ring cannot be set up: eio_main fails
# with `Failure("io_uring is not available (permission denied)")` (measured, eio 1.6);
# other versions raise a Unix_error naming io_uring_queue_init with EPERM, or ENOSYS on a
# kernel without io_uring.
_URING_REFUSED = re.compile(
    r"(uring|eio_linux).*(EPERM|ENOSYS|ENOMEM|not permitted|not implemented|not available"
    r"|permission denied)"
    r"|(EPERM|ENOSYS|not permitted|not implemented).*(uring|eio_linux)",
    re.IGNORECASE,
)


def io_uring_refusal(lines: Sequence[str], result: dict[str, Any] | None) -> str | None:
    """The evidence line if the server could not set up io_uring, else None."""
    candidates = list(lines)
    if result is not None:
        for trial in result.get("trials", []):
            for stage in trial.get("stages", []):
                candidates.extend(stage.get("server_output") or [])
    for line in candidates:
        if _URING_REFUSED.search(line):
            return line.strip()
    return None


def _suite_seconds(result: dict[str, Any] | None) -> float | None:
    if not result:
        return None

    try:
        start = datetime.fromisoformat(str(result["started_at"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(result["finished_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError, TypeError):
        return None
    return max(0.0, (end - start).total_seconds())


def _all_passed(result: dict[str, Any] | None) -> bool:
    if not result or not result.get("complete"):
        return False
    summary = result.get("summary", {})
    trials = result.get("trials", [])
    return bool(trials) and summary.get("trials_all_passed") == len(trials)


LineCallback = Callable[[str], None]
ProgressCallback = Callable[[dict[str, Any]], None]


def _drain_logs(container: Container, log_path: Path, on_line: LineCallback | None,
                lines: list[str]) -> None:
    """Follow the container's output until it exits, into the log file and the caller."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pending = b""
    with log_path.open("wb") as log:
        try:
            for chunk in container.logs(stream=True, follow=True):
                log.write(chunk)
                log.flush()
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    line = raw.decode("utf-8", "replace")
                    lines.append(line)
                    if on_line is not None:
                        on_line(line)
        except Exception as e:  # the stream ends however the engine ends it
            log.write(f"\n[lab] log stream ended: {e}\n".encode())
        if pending:
            line = pending.decode("utf-8", "replace")
            lines.append(line)
            if on_line is not None:
                on_line(line)


def run_container(
    client: docker.DockerClient,
    req: RunRequest,
    *,
    stop: threading.Event | None = None,
    on_line: LineCallback | None = None,
    on_progress: ProgressCallback | None = None,
    poll_s: float = 0.5,
) -> RunOutcome:
    """Create, start, follow, wait for and remove one container; never raises for a
    fault of the implementation or its container: that becomes the outcome's error."""

    stop = stop or threading.Event()
    t0 = time.monotonic()
    req.staging_dir.mkdir(parents=True, exist_ok=True)
    # The container runs as uid 1000 and has to create files (and the harness's temp
    # files for its atomic rewrite) here; we may be root or any other user.
    os.chmod(req.staging_dir, 0o777)
    mirror = ResultMirror(req)
    lines: list[str] = []
    container: Container | None = None
    error: str | None = None
    status = "ok"
    exit_code: int | None = None
    setup_s = 0.0
    t_exit = t0
    parts: dict[str, float] = {}  # where the overhead goes (benchmarks/compare.py)

    def outcome(teardown_s: float | None) -> RunOutcome:
        result = mirror.sync()
        return RunOutcome(
            impl=req.impl,
            status=status,
            error=error,
            exit_code=exit_code,
            seccomp=req.seccomp.mode,
            result_path=req.result_path if result is not None else None,
            log_path=req.log_path,
            wall_s=round(time.monotonic() - t0, 3),
            overhead_s=None if teardown_s is None else round(setup_s + teardown_s, 3),
            suite_s=_suite_seconds(result),
            all_passed=_all_passed(result),
            io_uring_blocked=bool(error and "cannot use io_uring" in error),
            result=result,
            overhead_parts={k: round(v, 3) for k, v in parts.items()},
        )

    if stop.is_set():
        status, error = "interrupted", "interrupted before its container started"
        return outcome(None)
    try:
        container = client.containers.create(**create_kwargs(req))
        parts["create_s"] = time.monotonic() - t0
        if stop.is_set():
            raise InterruptedError
        container.start()
        parts["start_s"] = time.monotonic() - t0 - parts["create_s"]
    except InterruptedError:
        status, error = "interrupted", "interrupted before its container started"
    except docker.errors.DockerException as e:
        status, error = "error", f"container did not start: {_one_line(e)}"
    if status != "ok":
        if container is not None:
            _remove(container)
        req.log_path.parent.mkdir(parents=True, exist_ok=True)
        req.log_path.write_text(f"[lab] {error}\n", encoding="utf-8")
        return outcome(None)
    assert container is not None
    setup_s = time.monotonic() - t0
    log_thread = threading.Thread(
        target=_drain_logs, args=(container, req.log_path, on_line, lines), daemon=True
    )
    log_thread.start()
    deadline = t0 + req.timeout_s
    stopped_by_us = False
    while True:
        try:
            exit_code = int(container.wait(timeout=poll_s).get("StatusCode", -1))
            break
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            pass
        except docker.errors.NotFound:
            # Removed under us (lab clean, or a forced Ctrl-C).
            status, error = "interrupted", "its container was removed while running"
            break
        except docker.errors.DockerException as e:
            status, error = "error", f"lost the container: {_one_line(e)}"
            break
        latest = mirror.sync()
        if on_progress is not None and latest is not None:
            on_progress(latest)
        if stopped_by_us:
            continue
        if stop.is_set():
            status, error = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
            _stop(container)
            stopped_by_us = True
        elif time.monotonic() > deadline:
            status = "error"
            error = (
                f"harness timed out: still running after the wall-clock limit of "
                f"{req.timeout_s:.0f} s (raise it with --timeout)"
            )
            _stop(container)
            stopped_by_us = True
    t_exit = time.monotonic()
    log_thread.join(timeout=5)
    parts["logs_s"] = time.monotonic() - t_exit
    t_copy = time.monotonic()
    result = mirror.sync()
    parts["copy_s"] = time.monotonic() - t_copy
    if on_progress is not None and result is not None:
        on_progress(result)
    t_remove = time.monotonic()
    _remove(container)
    with contextlib.suppress(OSError):
        shutil.rmtree(req.staging_dir)
    parts["remove_s"] = time.monotonic() - t_remove
    teardown_s = time.monotonic() - t_exit
    if status == "ok":
        error = _judge(req, exit_code, result, lines)
        if error is not None:
            status = "error"
    return outcome(teardown_s)


def _judge(req: RunRequest, exit_code: int | None, result: dict[str, Any] | None,
           lines: list[str]) -> str | None:
    """Whether the run produced a trustworthy result, and if not, why (one line)."""
    if req.needs_io_uring:
        refusal = io_uring_refusal(lines, result)
        if refusal is not None:
            return (
                f"{req.impl} cannot use io_uring in its container (seccomp {req.seccomp.mode}):"
                f" {refusal[:200]} - give it seccomp=unconfined or a --seccomp-profile that "
                "allows io_uring_setup, io_uring_enter and io_uring_register"
            )
    if exit_code == 137:
        return (f"its container was killed (exit 137: out of memory at {MEM_LIMIT}, or "
                f"SIGKILL); see {req.log_path}")
    if result is None:
        tail = " | ".join(line for line in lines[-3:] if line.strip())
        return f"the harness wrote no result (exit {exit_code}): {tail[:300] or 'no output'}"
    if not result.get("complete") and not result.get("interrupted"):
        return f"the harness died before finishing (exit {exit_code}); see {req.log_path}"
    if exit_code not in (0, 1):
        return f"the harness exited with {exit_code}; see {req.log_path}"
    return None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def _stop(container: Container) -> None:

    with contextlib.suppress(docker.errors.DockerException):
        container.stop(timeout=STOP_GRACE_S)


def _remove(container: Container) -> None:
    from lab.orchestrate.clean import gone_or_going

    try:
        container.remove(force=True, v=True)
    except docker.errors.APIError as error:
        if not gone_or_going(error):  # 404 gone, 409 a forced Ctrl-C is removing it now
            raise


def connect() -> docker.DockerClient:
    """A client whose engine answered, or RunError saying where it was looked for."""
    from lab.orchestrate import images  # images imports the catalog and base bootstrap

    try:
        return images.connect(timeout=120)
    except images.EngineUnreachable as e:
        raise RunError(str(e)) from None
