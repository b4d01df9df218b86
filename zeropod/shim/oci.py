"""Read a container's pod identity and network namespace from its OCI spec (config.json).

containerd's CRI plugin writes the pod's name, namespace, sandbox id and the container's
name into the spec's annotations, and the pod's network namespace into
``linux.namespaces``. The shim uses :func:`cri_registration` to build the arguments of
:class:`zeropod.shim.daemonlink.DaemonLink`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
CONTAINER_NAME = "io.kubernetes.cri.container-name"


def cri_registration(
    container_id: str, bundle: str, pid: int, spec: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Keyword arguments of a ``RegisterRequest``, or ``None`` when there is nothing to register.

    ``None`` for a pod's sandbox (pause) container and for containers not created through CRI
    (no pod annotations, e.g. ``ctr run``).
    """
    annotations = spec.get("annotations") or {}
    if not isinstance(annotations, Mapping) or annotations.get(CONTAINER_TYPE) != "container":
        return None
    names = (SANDBOX_NAME, SANDBOX_NAMESPACE, CONTAINER_NAME, SANDBOX_ID)
    if not all(isinstance(annotations.get(key), str) for key in names):
        return None
    return {
        "container_id": container_id,
        "pod": annotations[SANDBOX_NAME],
        "namespace": annotations[SANDBOX_NAMESPACE],
        "container": annotations[CONTAINER_NAME],
        "sandbox_id": annotations[SANDBOX_ID],
        "netns": network_namespace_path(spec),
        "bundle": bundle,
        "pid": pid,
        "annotations": {k: v for k, v in annotations.items() if isinstance(v, str)},
    }


def network_namespace_path(spec: Mapping[str, Any]) -> str:
    """The path of the network namespace the container joins; empty if it has none of its own."""
    linux = spec.get("linux") or {}
    namespaces = linux.get("namespaces") if isinstance(linux, Mapping) else None
    for namespace in namespaces or ():
        if isinstance(namespace, Mapping) and namespace.get("type") == "network":
            path = namespace.get("path")
            return path if isinstance(path, str) else ""
    return ""
