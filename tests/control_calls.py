"""Register and unregister through the contract's one client, with the outcome as a value.

The shim makes these calls through :class:`zeropod.shim.daemonlink.DaemonLink`; tests that
only need the daemon's side use these thin wrappers over the same
:class:`~zeropod.contract.daemonclient.ControlClient`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zeropod.contract.daemonclient import ANNOTATION_PREFIX, ControlClient
from zeropod.contract.requests import RegisterRequest, UnregisterRequest


@dataclass(frozen=True)
class Outcome:
    ok: bool
    managed: bool | None = None
    error: str | None = None


def register_container(*, path: str, timeout: float = 0.5, **fields: Any) -> Outcome:
    fields["annotations"] = {
        k: v for k, v in fields.get("annotations", {}).items() if k.startswith(ANNOTATION_PREFIX)
    }
    try:
        answer = ControlClient(path, timeout).request(RegisterRequest(**fields).to_message())
    except Exception as err:
        return Outcome(False, error=str(err))
    return Outcome(True, managed=answer.get("managed"))


def unregister_container(container_id: str, *, path: str, timeout: float = 0.5) -> Outcome:
    try:
        ControlClient(path, timeout).request(UnregisterRequest(container_id).to_message())
    except Exception as err:
        return Outcome(False, error=str(err))
    return Outcome(True)
