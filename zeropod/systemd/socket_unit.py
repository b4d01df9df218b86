"""The transient socket unit that holds a sleeping container's ports (step 3 of the scale-down).

`start_socket_unit` asks systemd for a transient `<prefix>@<instance>.socket` listening, inside
the pod's network namespace, on exactly the app's addresses: same family, address, port and
v6only, with ReusePort so it joins the app's reuseport group (the app's socket must already
have SO_REUSEPORT, see zeropod.sockets.reuseport). systemd creates the sockets as uid 0.

Choices, with systemd 252 in mind (DESIGN.md, "systemd here"):
- The socket is named after its service: a transient socket cannot set Service= on 252, so
  `zeropod@X.socket` activates `zeropod@X.service`, whose template must be installed before a
  connection arrives (systemd refuses to start the socket while the service cannot be loaded).
- Accept=no: the activated service gets the listening sockets themselves.
- Backlog=4096: every connection queued in the app when it is checkpointed, and all that
  arrive while it sleeps, must fit.
- BindIPv6Only= follows the app's v6only ("both" or "ipv6-only"): a holder on [::] with
  another v6only is in another reuseport group and would get none of the app's connections.
  One socket unit has one BindIPv6Only, so IPv6 listeners that disagree are refused.
- FreeBind stays off: the app is bound to the address, so it is local; FreeBind would let a
  wrong address "succeed" while holding nothing.
- CollectMode=inactive-or-failed: a failed start does not leave a failed unit behind that
  would make the next StartTransientUnit of the same name fail with UnitExists.
- A listener owned by a uid other than 0 is refused: the kernel keeps sockets of different
  uids out of one reuseport group, so the bind would fail with EADDRINUSE.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zeropod.sockets.listeners import Listener

if TYPE_CHECKING:  # dbus-fast is needed only to talk to systemd, not to build properties
    from zeropod.systemd.manager import Systemd

DEFAULT_BACKLOG = 4096
DEFAULT_TIMEOUT = 10.0

# A unit property for StartTransientUnit: (name, D-Bus signature, value).
Property = tuple[str, str, Any]


def socket_unit_properties(
    listeners: Sequence[Listener],
    netns_path: str,
    description: str,
    backlog: int = DEFAULT_BACKLOG,
) -> list[Property]:
    """The StartTransientUnit properties of a socket unit holding LISTENERS in NETNS_PATH.

    Raises ValueError when the listeners cannot be held by one socket unit (none, IPv6 ones
    that disagree on v6only, a non-root owner) or NETNS_PATH is not absolute.
    """
    if not listeners:
        raise ValueError("no listeners to hold")
    if not os.path.isabs(netns_path):
        raise ValueError(f"netns path {netns_path!r}: expected an absolute path")
    for lst in listeners:
        if lst.uid != 0:
            raise ValueError(
                f"listener {lst.listen_address} (fd {lst.fd}) is owned by uid {lst.uid}: "
                "systemd's root-owned socket cannot join its reuseport group"
            )
    listen: list[tuple[str, str]] = []
    for lst in listeners:
        entry = ("Stream", lst.listen_address)
        if entry not in listen:
            listen.append(entry)
    props: list[Property] = [
        ("Description", "s", description),
        ("Listen", "a(ss)", listen),
        ("Accept", "b", False),
        ("ReusePort", "b", True),
        ("Backlog", "u", backlog),
        ("NetworkNamespacePath", "s", netns_path),
        ("CollectMode", "s", "inactive-or-failed"),
    ]
    v6only = {lst.v6only for lst in listeners if lst.family == socket.AF_INET6}
    if len(v6only) > 1:
        both = ", ".join(f"{x.listen_address} v6only={x.v6only}" for x in listeners)
        raise ValueError(f"IPv6 listeners disagree on v6only ({both}); one unit holds one kind")
    if v6only:
        props.append(("BindIPv6Only", "s", "ipv6-only" if v6only.pop() else "both"))
    return props


async def start_socket_unit(
    systemd: Systemd,
    name: str,
    listeners: Sequence[Listener],
    netns_path: str,
    description: str | None = None,
    backlog: int = DEFAULT_BACKLOG,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Start transient socket unit NAME (e.g. zeropod@<instance>.socket) holding LISTENERS.

    Returns once systemd listens (the start job is done); blocks at most TIMEOUT seconds.
    Raises ValueError (see socket_unit_properties), SystemdError (e.g. the unit exists) or
    JobFailedError (e.g. the bind failed because the app's socket lacks SO_REUSEPORT).
    """
    if not name.endswith(".socket"):
        raise ValueError(f"{name!r}: a socket unit name ends in .socket")
    desc = description or f"zeropod holds {', '.join(x.listen_address for x in listeners)}"
    props = socket_unit_properties(listeners, netns_path, desc, backlog)
    await systemd.start_transient_unit(name, props, timeout=timeout)


async def stop_unit(systemd: Systemd, name: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Stop unit NAME and wait for it; False when it was not loaded. A stopped transient
    socket unit is unloaded by systemd and closes its sockets (with tcp_migrate_req=1 their
    pending connections move to the app, once no other fd of them is open)."""
    return await systemd.stop_unit(name, timeout=timeout)
