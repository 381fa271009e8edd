"""Read compare run directories and merge them by implementation and machine.

A run directory is what `lab compare` writes (results/<UTC timestamp>/summary.json plus one
suite JSON per implementation). The shards of the nightly CI matrix are run directories
with one entry each. `load_inputs` accepts run directories, or directories holding run
directories (results/, a downloaded set of CI shards), and never raises for one bad file:
each unreadable file becomes a `LoadProblem` naming it, and the rest is still read.

Merging: entries with the same implementation name measured on the same machine (same
fingerprint host, kernel, cores and Docker version) are one group; their trials add up.
The same implementation on two machines stays two groups (the report labels them
`impl @ host`), because teardown windows depend on the kernel and the cores.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_SCHEMA_VERSIONS = {1}
# Fields of the fingerprint that make two runs "the same machine".
MACHINE_FIELDS = ("host", "kernel", "cores", "docker")


@dataclass
class LoadProblem:
    """One input that could not be read; `message` is one line and names the file."""

    path: Path
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Entry:
    """One implementation in one run directory."""

    impl: str
    run_id: str
    run_dir: Path
    fingerprint: dict[str, Any]
    meta: dict[str, Any]  # the summary.json entry as written by `lab compare`
    suite: dict[str, Any] | None  # the suite result JSON, None when absent or unreadable
    load_error: str | None = None

    @property
    def status(self) -> str:
        return str(self.meta.get("status") or "ok")

    @property
    def error(self) -> str | None:
        return self.load_error or self.meta.get("error")

    @property
    def log_path(self) -> str | None:
        log = self.meta.get("log_file")
        return str(self.run_dir / log) if log else None

    @property
    def machine(self) -> tuple[str, ...]:
        return machine_key(self.fingerprint)


@dataclass
class Run:
    """One compare run directory."""

    path: Path
    summary: dict[str, Any]
    entries: dict[str, Entry] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return str(self.summary.get("run_id") or self.path.name)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self.summary.get("fingerprint") or {})


@dataclass
class Group:
    """Every entry of one implementation on one machine, across runs and shards."""

    impl: str
    machine: tuple[str, ...]
    entries: list[Entry] = field(default_factory=list)
    label: str = ""

    @property
    def suites(self) -> list[dict[str, Any]]:
        return [e.suite for e in self.entries if e.suite is not None]

    @property
    def stages(self) -> list[dict[str, Any]]:
        return [s for suite in self.suites for t in suite.get("trials", []) for s in
                t.get("stages", [])]

    @property
    def trials(self) -> list[dict[str, Any]]:
        return [t for suite in self.suites for t in suite.get("trials", [])]

    @property
    def expected(self) -> str | None:
        for e in self.entries:
            if e.meta.get("expected"):
                return str(e.meta["expected"])
        return None


def machine_key(fingerprint: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(fingerprint.get(k, "?")) for k in MACHINE_FIELDS)


def _read_json(path: Path, kind: str) -> dict[str, Any]:
    """Parse one lab JSON file; raise ValueError with a one-line message naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON (truncated or corrupt? {exc.msg} at line {exc.lineno})"
        ) from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    version = data.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ValueError(
            f"{path}: unknown schema_version {version!r} (this lab reads "
            f"{sorted(SUPPORTED_SCHEMA_VERSIONS)}; upgrade the lab or regenerate the file)"
        )
    if data.get("kind") != kind:
        raise ValueError(f"{path}: kind is {data.get('kind')!r}, expected {kind!r}")
    return data


# Handoff timelines kept per suite file (per pass/fail verdict and kind): the report shows
# one failing and one passing example, and the rest only costs memory and pickling.
EXAMPLES_KEPT = 2
# Above this many bytes of result JSON, files are parsed in worker processes.
PARALLEL_BYTES = 8_000_000


def digest_suite(data: dict[str, Any]) -> dict[str, Any]:
    """The suite JSON with what the report never reads dropped (server output, logs,
    evidence, all but a few handoff timelines). Same shape, so every reader is unchanged."""
    kept: dict[tuple[bool, str], int] = {}
    trials = []
    for trial in data.get("trials") or []:
        stages = []
        for stage in trial.get("stages") or []:
            slim = {k: stage.get(k) for k in ("slug", "title", "position", "passed", "error",
                                              "diagnosis", "io_uring", "sigkill", "exit_code")}
            teardown = stage.get("teardown")
            if isinstance(teardown, dict):
                slim["teardown"] = {k: teardown.get(k) for k in (
                    "sigterm_to_exit_ms", "sigterm_to_listener_gone_ms", "ghost_ms", "sigkill",
                    "listener_outlived_watch")}
            else:
                slim["teardown"] = None
            handoff = stage.get("handoff")
            if isinstance(handoff, dict):
                kind = str(handoff.get("kind") or "unknown")
                key = (bool(stage.get("passed")), kind)
                timeline = []
                if kept.get(key, 0) < EXAMPLES_KEPT and handoff.get("timeline"):
                    kept[key] = kept.get(key, 0) + 1
                    timeline = handoff["timeline"]
                slim["handoff"] = {"kind": kind, "timeline": timeline}
            else:
                slim["handoff"] = None
            stages.append(slim)
        trials.append({"index": trial.get("index"), "all_passed": trial.get("all_passed"),
                       "stages": stages})
    digest = {k: v for k, v in data.items() if k != "trials"}
    digest["trials"] = trials
    return digest


def _load_suite(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(digest, None) or (None, one-line error). Runs in worker processes too."""
    try:
        return digest_suite(_read_json(path, "suite")), None
    except ValueError as exc:
        return None, str(exc)


def _read_summary(path: Path, problems: list[LoadProblem]) -> tuple[Run | None,
                                                                    list[tuple[Entry, Path]]]:
    summary_path = path / "summary.json"
    try:
        summary = _read_json(summary_path, "compare")
    except ValueError as exc:
        problems.append(LoadProblem(summary_path, str(exc)))
        return None, []
    run = Run(path=path, summary=summary)
    raw_entries = summary.get("entries")
    if not isinstance(raw_entries, dict):
        problems.append(LoadProblem(summary_path, f"{summary_path}: has no 'entries' object"))
        return None, []
    jobs = []
    for impl, raw_meta in raw_entries.items():
        meta = raw_meta if isinstance(raw_meta, dict) else {}
        entry = Entry(impl=impl, run_id=run.run_id, run_dir=path,
                      fingerprint=run.fingerprint, meta=meta, suite=None)
        if meta.get("result_file"):
            jobs.append((entry, path / str(meta["result_file"])))
        run.entries[impl] = entry
    return run, jobs


def _fill_suites(jobs: list[tuple[Entry, Path]], problems: list[LoadProblem]) -> None:
    """Parse the result files, in parallel when there is much to parse."""
    paths = [p for _, p in jobs]
    total = sum(p.stat().st_size for p in paths if p.is_file())
    workers = min(len(os.sched_getaffinity(0)), len(paths))
    if total > PARALLEL_BYTES and workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_load_suite, paths, chunksize=max(1, len(paths) // (
                4 * workers))))
    else:
        results = [_load_suite(p) for p in paths]
    for (entry, path), (suite, error) in zip(jobs, results, strict=True):
        if error is not None:
            problems.append(LoadProblem(path, error))
            entry.load_error = f"unreadable result file {path}"
        entry.suite = suite


def load_run_dir(path: Path, problems: list[LoadProblem]) -> Run | None:
    """Read one run directory; unreadable files are appended to `problems`."""
    run, jobs = _read_summary(path, problems)
    _fill_suites(jobs, problems)
    return run


def find_run_dirs(path: Path) -> list[Path]:
    """`path` itself when it is a run directory, else the run directories below it
    (two levels: results/<run>/ and shards/<artifact>/<run>/)."""
    if (path / "summary.json").exists():
        return [path]
    found: list[Path] = []
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        if (child / "summary.json").exists():
            found.append(child)
        else:
            found.extend(sorted(g for g in child.iterdir()
                                if g.is_dir() and (g / "summary.json").exists()))
    return found


def load_inputs(paths: list[Path]) -> tuple[list[Run], list[LoadProblem]]:
    """Read every run directory named by or found under `paths`."""
    runs: list[Run] = []
    problems: list[LoadProblem] = []
    jobs: list[tuple[Entry, Path]] = []
    for path in paths:
        if not path.exists():
            problems.append(LoadProblem(path, f"{path}: no such directory"))
            continue
        if not path.is_dir():
            problems.append(LoadProblem(path, f"{path}: not a directory (give a run "
                                              "directory from `lab compare`)"))
            continue
        run_dirs = find_run_dirs(path)
        if not run_dirs:
            problems.append(LoadProblem(path, f"{path}: no summary.json in it or below it "
                                              "(not a `lab compare` result directory)"))
        for run_dir in run_dirs:
            run, run_jobs = _read_summary(run_dir, problems)
            if run is not None:
                runs.append(run)
                jobs += run_jobs
    # All result files at once, so a long history is parsed by every core.
    _fill_suites(jobs, problems)
    return runs, problems


def merge(runs: list[Run]) -> list[Group]:
    """Group entries by (implementation, machine); label groups uniquely."""
    groups: dict[tuple[str, tuple[str, ...]], Group] = {}
    for run in runs:
        for entry in run.entries.values():
            key = (entry.impl, entry.machine)
            groups.setdefault(key, Group(impl=entry.impl, machine=entry.machine))
            groups[key].entries.append(entry)
    machines_per_impl: dict[str, int] = {}
    for impl, _machine in groups:
        machines_per_impl[impl] = machines_per_impl.get(impl, 0) + 1
    for (impl, machine), group in groups.items():
        group.label = impl if machines_per_impl[impl] == 1 else f"{impl} @ {machine[0]}"
    return list(groups.values())
