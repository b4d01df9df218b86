"""What the scale-to-zero tests need beyond CRI: a real client, the daemon's view, the journal.

Traffic from the node's own addresses counts as kubelet's (probes) and never wakes or keeps a
pod awake, so "real" clients run in a network namespace of their own inside the node
(`CLIENT_NETNS`, attached to the CNI bridge with `CLIENT_IP`), as another machine or pod would.
The daemon is reached from the host through its control socket in the node.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from e2e import http
from e2e.cri import ContainerSpec, Cri, RunningPod, wait_for
from e2e.images import APP_PORT
from e2e.node import Node
from zeropod.contract.daemonclient import ControlClient
from zeropod.contract.protocol import DaemonUnavailable

CLIENT_NETNS = "zpclient"
CLIENT_IP = "10.88.255.254"
BRIDGE = "cni0"
GATEWAY = "10.88.0.1"
CONTROL_SOCKET = "/run/zeropod/control.sock"
ANNOTATION = "zeropod.ctrox.dev/"

_CLIENT_SETUP = f"""
set -e
ip netns list | grep -qw {CLIENT_NETNS} || ip netns add {CLIENT_NETNS}
if ! ip link show zpc-host >/dev/null 2>&1; then
  ip link add zpc-host type veth peer name zpc-ns
  ip link set zpc-ns netns {CLIENT_NETNS}
fi
ip link set zpc-host master {BRIDGE} up
ip -n {CLIENT_NETNS} link set lo up
ip -n {CLIENT_NETNS} link set zpc-ns up
ip -n {CLIENT_NETNS} addr replace {CLIENT_IP}/16 dev zpc-ns
ip -n {CLIENT_NETNS} route replace default via {GATEWAY}
"""


def ensure_client_netns(node: Node) -> None:
    """Create the client's network namespace on the CNI bridge (needs a pod to exist first)."""
    node.run(["sh", "-c", _CLIENT_SETUP], check=True)


def client_get(node: Node, target: str, **options: Any) -> http.Results:
    """HTTP from the client namespace (a real client, not the node): see `e2e.http.get`."""
    return http.get(node, target, netns=CLIENT_NETNS, **options)


def client_start(node: Node, target: str, **options: Any):  # -> Future[http.Results]
    return http.start(node, target, netns=CLIENT_NETNS, **options)


def annotations(**values: str) -> dict[str, str]:
    """zeropod annotations from keywords: scaledown_duration="2s" -> .../scaledown-duration."""
    return {ANNOTATION + key.replace("_", "-"): value for key, value in values.items()}


NEVER_ON_ITS_OWN = annotations(scaledown_duration="10m")  # sleeps only when a test forces it


class Daemon:
    """The zeropod daemon of the node, through its control socket."""

    def __init__(self, node: Node, timeout: float = 30.0) -> None:
        self.node = node
        self.client = ControlClient(str(node.host_path(CONTROL_SOCKET)), timeout=timeout)

    def state_waiting(self, container_id: str, timeout: float = 30.0) -> str | None:
        """The container's state; waits out a restarting daemon (its socket refuses meanwhile)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.state(container_id)
            except DaemonUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def container(self, container_id: str) -> dict[str, Any] | None:
        return next((c for c in self.client.status() if c["id"] == container_id), None)

    def state(self, container_id: str) -> str | None:
        found = self.container(container_id)
        return found["state"] if found else None

    def wait_state(self, container_id: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the daemon until the container is in STATE; return its description."""

        def reached() -> dict[str, Any] | None:
            found = self.container(container_id)
            return found if found and found["state"] == state else None

        return wait_for(reached, timeout, interval=0.05, what=f"{container_id[:12]} in {state}")

    def sleep(self, pod: str, namespace: str = "default") -> dict[str, Any]:
        """Force a pod to sleep now (as `zeropodctl sleep`); returns when it is scaled down."""
        return self.client.request({"v": 1, "op": "sleep", "pod": pod, "namespace": namespace})

    def wake(self, pod: str, namespace: str = "default") -> dict[str, Any]:
        return self.client.request({"v": 1, "op": "wake", "pod": pod, "namespace": namespace})


def journal(node: Node, *matches: str) -> list[dict[str, Any]]:
    """Journal entries in the node matching MATCHES (e.g. "POD=web"), as JSON objects."""
    out = node.run(["journalctl", "--no-pager", "-o", "json", *matches], check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@contextlib.contextmanager
def counter_pod(
    cri: Cri,
    node: Node,
    daemon: Daemon,
    prefix: str = "pod",
    pod_annotations: dict[str, str] = NEVER_ON_ITS_OWN,
) -> Iterator[tuple[RunningPod, str, str]]:
    """A counter pod; yields (pod, container id, URL) once the daemon has registered it."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    with cri.pod(name, [ContainerSpec("app", "counter")], annotations=pod_annotations) as running:
        ensure_client_netns(node)
        cid = running.containers["app"]
        daemon.wait_state(cid, "RUNNING")
        yield running, cid, http.url(cri.pod_ip(running.pod), APP_PORT)
