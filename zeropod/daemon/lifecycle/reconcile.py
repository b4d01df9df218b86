"""After a restart the daemon asks the shims what is true before it acts.

The state files say what each container was when the daemon last wrote them; the daemon may
have died mid-dump, or a shim may have woken its container alone (an exec while the daemon
was down). Each container's shim answers ``status`` (:mod:`zeropod.contract.shimops`), and
its answer wins:

- ``running`` / ``created``: RUNNING with the shim's pid (a pod whose every container runs
  has its held ports released: the app listens again);
- ``scaled_down``: SCALED_DOWN (the socket unit holds its ports);
- ``checkpointing`` / ``restoring``: the shim is mid-op; FAILED, so the next wake asks it
  again (a task that runs answers at once);
- ``exited``, ``ended``, ``deleted``, or not known to its shim: gone, forgotten with its image;
- a shim that does not answer: the state file's guess (:func:`.statefiles.recovered_phase`),
  logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from zeropod.contract.shimops import TaskStatus
from zeropod.daemon.model.phase import Phase

ALIVE = {"running": Phase.RUNNING, "created": Phase.RUNNING, "scaled_down": Phase.SCALED_DOWN}
MID_OP = {"checkpointing", "restoring"}


@dataclass(frozen=True)
class Verdict:
    """What a reloaded container is: ``phase`` None means forget it."""

    phase: Phase | None
    pid: int
    why: str


def verdict(saved_phase: Phase, saved_pid: int, status: TaskStatus | None) -> Verdict:
    """The phase to reload a container in, from its shim's answer (see the module docstring)."""
    if status is None:
        return Verdict(None, saved_pid, "its shim does not know it")
    if status.phase in ALIVE:
        phase = ALIVE[status.phase]
        pid = status.pid if phase is Phase.RUNNING else status.last_pid
        why = "as its shim reports" + (
            "" if phase is saved_phase else f" (saved {saved_phase.value})"
        )
        return Verdict(phase, pid or saved_pid, why)
    if status.phase in MID_OP:
        return Verdict(Phase.FAILED, status.last_pid or saved_pid, f"its shim is {status.phase}")
    return Verdict(None, saved_pid, f"its shim says {status.phase}")
