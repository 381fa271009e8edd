"""Remove what lab runs left behind: every container, network and volume labelled
`lab.run-id` (all runs, or one), and say what was removed."""

from __future__ import annotations

from dataclasses import dataclass

import docker
import docker.errors

from lab.orchestrate.run import LABEL_IMPL, LABEL_RUN_ID


@dataclass(frozen=True)
class Removed:
    kind: str  # container | network | volume
    name: str
    run_id: str
    impl: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name} (run {self.run_id}, {self.impl or '-'})"


def _label_filter(run_id: str | None) -> dict[str, str]:
    return {"label": f"{LABEL_RUN_ID}={run_id}" if run_id else LABEL_RUN_ID}


def gone_or_going(error: docker.errors.APIError) -> bool:
    """404: already removed; 409: a removal is in progress (a forced Ctrl-C raced us)."""
    return error.status_code in (404, 409)


def remove_labelled(client: docker.DockerClient, run_id: str | None = None) -> list[Removed]:
    """Force-remove labelled containers first (they hold networks and volumes)."""

    removed: list[Removed] = []
    filters = _label_filter(run_id)
    for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
        labels = container.labels or {}
        try:
            container.remove(force=True, v=True)
        except docker.errors.APIError as error:
            if not gone_or_going(error):
                raise
        else:
            removed.append(Removed("container", container.name,
                                   labels.get(LABEL_RUN_ID, ""), labels.get(LABEL_IMPL, "")))
    for network in client.networks.list(filters=filters):
        labels = network.attrs.get("Labels") or {}
        try:
            network.remove()
        except docker.errors.APIError as error:
            if not gone_or_going(error):
                raise
        else:
            removed.append(Removed("network", network.name,
                                   labels.get(LABEL_RUN_ID, ""), labels.get(LABEL_IMPL, "")))
    for volume in client.volumes.list(filters=filters):
        labels = volume.attrs.get("Labels") or {}
        try:
            volume.remove(force=True)
        except docker.errors.APIError as error:
            if not gone_or_going(error):
                raise
        else:
            removed.append(Removed("volume", volume.name,
                                   labels.get(LABEL_RUN_ID, ""), labels.get(LABEL_IMPL, "")))
    return removed


def labelled_containers(client: docker.DockerClient, run_id: str | None = None) -> list[str]:
    return [c.name for c in client.containers.list(all=True, filters=_label_filter(run_id), ignore_removed=True)]
