"""The registry on disk: one JSON file per container in ``/run/zeropod/state/``.

``/run/zeropod`` is kept across daemon restarts (``RuntimeDirectoryPreserve=yes``), so a
daemon killed while a pod sleeps reloads the pod as SCALED_DOWN and still wakes it on the
next connection (the socket unit belongs to systemd and survives the daemon). Files are
written atomically (temporary file, then rename) on every registration and transition.

A container caught mid-transition by the crash comes back as what its process says: a
CHECKPOINTING or RESTORING container whose process still lives is RUNNING, one whose process
is gone is SCALED_DOWN (its image, if any, is still there; a wake restores it or starts it
cold).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.pod import HeldPort
from zeropod.daemon.model.registry import Container, ContainerIdentity

STATE_DIR = "/run/zeropod/state"
FORMAT = 1


@dataclass(frozen=True)
class Saved:
    """One container as it was saved."""

    identity: ContainerIdentity
    pid: int
    annotations: dict[str, str]
    phase: Phase
    held_ports: tuple[HeldPort, ...]
    last_checkpoint_ms: float | None = None
    last_restore_ms: float | None = None


def to_json(container: Container, held_ports: tuple[HeldPort, ...]) -> dict[str, Any]:
    """The state file's content for ``container``."""
    return {
        "format": FORMAT,
        "identity": asdict(container.identity),
        "pid": container.pid,
        "annotations": container.annotations,
        "phase": container.phase.phase.value,
        "held_ports": [p.to_json() for p in held_ports],
        "last_checkpoint_ms": container.measured.last_checkpoint_ms,
        "last_restore_ms": container.measured.last_restore_ms,
    }


def from_json(data: dict[str, Any]) -> Saved:
    """Parse a state file's content; raises ValueError naming what is wrong."""
    if data.get("format") != FORMAT:
        raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
    try:
        identity = ContainerIdentity(**data["identity"])
        annotations = {str(k): str(v) for k, v in data["annotations"].items()}
        return Saved(
            identity=identity,
            pid=int(data["pid"]),
            annotations=annotations,
            phase=Phase(data["phase"]),
            held_ports=tuple(HeldPort.from_json(p) for p in data["held_ports"]),
            last_checkpoint_ms=data.get("last_checkpoint_ms"),
            last_restore_ms=data.get("last_restore_ms"),
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"missing or malformed field: {err!r}") from err


def recovered_phase(saved: Phase, alive: bool) -> Phase:
    """The phase to resume in after a restart (see the module docstring)."""
    if saved in (Phase.CHECKPOINTING, Phase.RESTORING):
        return Phase.RUNNING if alive else Phase.SCALED_DOWN
    return saved


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class StateStore:
    """Saves, removes and loads container state files in ``directory``."""

    def __init__(self, directory: str = STATE_DIR) -> None:
        self.directory = directory

    def _file(self, container_id: str) -> str:
        return os.path.join(self.directory, f"{container_id}.json")

    def save(self, container: Container, held_ports: tuple[HeldPort, ...]) -> None:
        """Write ``container``'s state atomically; raises OSError."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = self._file(container.identity.container_id)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(to_json(container, held_ports), f)
        os.replace(tmp, path)

    def remove(self, container_id: str) -> None:
        """Delete a container's state file (missing is fine)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file(container_id))

    def load(self, on_error: Callable[[str], None]) -> list[Saved]:
        """Every readable state file; ``on_error`` gets one line per unreadable one, which is
        removed."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        saved: list[Saved] = []
        for name in names:
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path) as f:
                    saved.append(from_json(json.load(f)))
            except (OSError, ValueError) as err:
                on_error(f"state file {path} unreadable, dropped: {err}")
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return saved
