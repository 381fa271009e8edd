"""The catalog, `lab list`, `lab build`'s input checks and the base recipe (no Docker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lab.orchestrate import base, catalog

ROOT = Path(__file__).resolve().parent.parent
ALL_ENTRIES = {
    "eio-uring", "eio-posix", "eio-uring-graceful", "eio-posix-graceful", "eio-uring-prompt",
    "eio-uring-reuseport", "lwt", "lwt-graceful", "python", "python-ghost", "redis",
}  # fmt: skip


def lab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, check=False,
    )  # fmt: skip


def test_list_json_names_every_entry_with_the_fields_ci_reads() -> None:
    done = lab("list", "--json")
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)
    assert isinstance(entries, list)
    assert {e["name"] for e in entries} == ALL_ENTRIES
    assert len(entries) == len(ALL_ENTRIES)
    for entry in entries:
        for key in ("name", "image", "needs_io_uring", "description", "expected", "role"):
            assert key in entry, (entry["name"], key)
        assert entry["description"] and "\n" not in entry["description"]
        assert (ROOT / entry["dockerfile"]).is_file(), entry["dockerfile"]


def test_list_table_shows_every_entry() -> None:
    done = lab("list")
    assert done.returncode == 0, done.stderr
    for name in ALL_ENTRIES:
        assert f"\n{name} " in done.stdout, name


def test_io_uring_entries_force_the_backend_and_posix_ones_avoid_it() -> None:
    for entry in catalog.ENTRIES.values():
        backend = entry.env.get("EIO_BACKEND")
        if entry.name.startswith("eio-uring"):
            assert backend == "io-uring" and entry.needs_io_uring, entry.name
        elif entry.name.startswith("eio-posix"):
            assert backend == "posix" and not entry.needs_io_uring, entry.name
        else:
            assert backend is None and not entry.needs_io_uring, entry.name


def test_controls_and_their_expectations() -> None:
    assert catalog.get("redis").role == "control" and catalog.get("redis").expected == "pass"
    assert catalog.get("python").role == "control" and catalog.get("python").expected == "pass"
    ghost = catalog.get("python-ghost")
    assert ghost.role == "positive-control" and ghost.expected == "ghost"
    assert ghost.command_for(6380)[-2:] == ["--ghost-ms", "6"]
    for entry in catalog.ENTRIES.values():
        assert entry.expected in catalog.EXPECTED_OUTCOMES
        assert entry.role in catalog.ROLES
        assert entry.image in catalog.IMAGES


def test_command_for_substitutes_the_port() -> None:
    assert catalog.get("eio-uring-prompt").command_for(7000) == [
        "eio_server", "--port", "7000", "--shutdown", "prompt",
    ]  # fmt: skip
    assert "{port}" not in " ".join(catalog.get("redis").command_for())


def test_resolve_reports_every_unknown_name_and_the_known_ones() -> None:
    with pytest.raises(catalog.UnknownImplementation) as caught:
        catalog.resolve(["redis", "nginx", "apache"])
    message = str(caught.value)
    assert "'nginx'" in message and "'apache'" in message
    assert all(name in message for name in ALL_ENTRIES)
    assert [e.name for e in catalog.resolve(["lwt", "redis", "lwt"])] == ["lwt", "redis"]


def test_build_rejects_an_unknown_implementation_with_exit_2() -> None:
    done = lab("build", "eio-urin")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "unknown implementation 'eio-urin'" in done.stderr
    assert "eio-uring-prompt" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_build_needs_names_or_all() -> None:
    done = lab("build")
    assert done.returncode == 2
    assert "--all" in done.stderr and "Traceback" not in done.stderr


def test_build_says_where_it_looked_for_an_unreachable_engine(tmp_path: Path) -> None:
    socket_path = tmp_path / "no-engine.sock"
    env = dict(os.environ, DOCKER_HOST=f"unix://{socket_path}")
    done = lab("build", "--all", env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert str(socket_path) in done.stderr and "DOCKER_HOST" in done.stderr


def test_mirror_comes_from_the_apt_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAB_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: x\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    assert base.debian_mirror(tmp_path) == "http://mirror.example/debian"
    legacy = tmp_path / "legacy"
    (legacy / "sources.list.d").mkdir(parents=True)
    (legacy / "sources.list").write_text("deb [arch=amd64] http://old.example/debian bookworm main\n")
    assert base.debian_mirror(legacy) == "http://old.example/debian"
    empty = tmp_path / "empty"
    (empty / "sources.list.d").mkdir(parents=True)
    with pytest.raises(base.BaseImageError, match="LAB_DEBIAN_MIRROR"):
        base.debian_mirror(empty)
    monkeypatch.setenv("LAB_DEBIAN_MIRROR", "http://chosen.example/debian")
    assert base.debian_mirror(empty) == "http://chosen.example/debian"


def test_changing_a_package_list_changes_the_base_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    before = base.content_hash()
    assert before == base.content_hash()
    monkeypatch.setattr(base, "RUNTIME_PACKAGES", (*base.RUNTIME_PACKAGES, "strace"))
    assert base.content_hash() != before


def test_bootstrap_without_root_or_debootstrap_names_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(base.BaseImageError, match="needs root"):
        base._bootstrap(None, "r", "b", print, None)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(base.shutil, "which", lambda _name: None)
    with pytest.raises(base.BaseImageError, match="apt-get install debootstrap"):
        base._bootstrap(None, "r", "b", print, None)


def test_packed_tree_leaves_out_pseudo_filesystems_and_caches(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for directory in ("proc/1", "usr/bin", "usr/share/doc/x", "var/lib/apt/lists", "etc"):
        (root / directory).mkdir(parents=True)
    (root / "proc/1/status").write_text("x")
    (root / "usr/bin/tool").write_text("x")
    (root / "usr/share/doc/x/README").write_text("x")
    (root / "var/lib/apt/lists/index").write_text("x")
    (root / "etc/resolv.conf").write_text("nameserver 10.0.0.1\n")
    archive = tmp_path / "tree.tar"
    base._pack(root, archive, prune=("usr/share/doc",))
    with tarfile.open(archive) as tar:
        names = {name.removeprefix("./") for name in tar.getnames()}
    assert "usr/bin/tool" in names and "proc" in names
    assert not {"proc/1/status", "usr/share/doc/x/README", "var/lib/apt/lists/index"} & names
    assert "etc/resolv.conf" not in names


def test_scratch_dir_is_removed_on_interrupt() -> None:
    seen: list[Path] = []
    with pytest.raises(KeyboardInterrupt), base._scratch_dir() as scratch:
        seen.append(scratch)
        (scratch / "root").mkdir()
        raise KeyboardInterrupt
    assert seen and not seen[0].exists()
