"""CRI request messages shaped the way kubelet shapes them, for the e2e CRI client.

Pure functions, no I/O: the pod log directory is /var/log/pods/<namespace>_<name>_<uid>, a
container's log path is <name>/<attempt>.log relative to it, pods get their own network and
IPC namespaces and each container its own PID namespace, and the kubelet labels are set.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from zeropod._gen.cri.runtime.v1 import api_pb2 as api

LOG_ROOT = "/var/log/pods"
TEST_REGISTRY = "localhost/zeropod-test"


def image_ref(image: str) -> str:
    """A full reference for IMAGE: test image short names map to localhost/zeropod-test/<n>:1."""
    return image if "/" in image or ":" in image else f"{TEST_REGISTRY}/{image}:1"


def pod_log_directory(namespace: str, name: str, uid: str, root: str = LOG_ROOT) -> str:
    """The pod's log directory, named like kubelet's: <root>/<namespace>_<name>_<uid>."""
    return f"{root}/{namespace}_{name}_{uid}"


def container_log_path(name: str, attempt: int = 0) -> str:
    """A container's log path relative to its pod's log directory: <name>/<attempt>.log."""
    return f"{name}/{attempt}.log"


def _pod_namespaces(host_pid: bool = False) -> api.NamespaceOption:
    # Like kubelet without hostNetwork: network and IPC of the pod, PID per container (or the
    # node's, for hostPID: true).
    pid = api.NODE if host_pid else api.CONTAINER
    return api.NamespaceOption(network=api.POD, pid=pid, ipc=api.POD)


def pod_config(
    name: str,
    namespace: str = "default",
    uid: str = "",
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    port_mappings: Sequence[tuple[int, int]] = (),
    cgroup_parent: str = "",
    log_root: str = LOG_ROOT,
    privileged: bool = False,
    host_pid: bool = False,
) -> api.PodSandboxConfig:
    """A PodSandboxConfig like kubelet's; PORT_MAPPINGS are (container_port, host_port) pairs."""
    uid = uid or str(uuid.uuid4())
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
        hostname=name,
        log_directory=pod_log_directory(namespace, name, uid, log_root),
        port_mappings=[
            api.PortMapping(protocol=api.TCP, container_port=c, host_port=h)
            for c, h in port_mappings
        ],
        labels={
            "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.uid": uid,
            **(labels or {}),
        },
        annotations=dict(annotations or {}),
        linux=api.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=_pod_namespaces(host_pid), privileged=privileged
            ),
        ),
    )


def container_config(
    name: str,
    image: str,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    command: Sequence[str] = (),
    annotations: Mapping[str, str] | None = None,
    log_path: str | None = None,
    run_as_user: int | None = None,
    privileged: bool = False,
    mounts: Sequence[tuple[str, ...]] = (),
    host_pid: bool = False,
) -> api.ContainerConfig:
    """A ContainerConfig like kubelet's; LOG_PATH is relative to the pod's log directory.
    RUN_AS_USER is the pod spec's securityContext.runAsUser (group: the same id); MOUNTS are
    :func:`mount`'s arguments."""
    security = api.LinuxContainerSecurityContext(
        namespace_options=_pod_namespaces(host_pid), privileged=privileged
    )
    if run_as_user is not None:
        security.run_as_user.value = run_as_user
        security.run_as_group.value = run_as_user
    return api.ContainerConfig(
        metadata=api.ContainerMetadata(name=name, attempt=0),
        image=api.ImageSpec(image=image_ref(image)),
        command=list(command),
        args=list(args),
        envs=[api.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
        labels={"io.kubernetes.container.name": name},
        annotations=dict(annotations or {}),
        log_path=log_path if log_path is not None else container_log_path(name),
        mounts=[mount(*m) for m in mounts],
        linux=api.LinuxContainerConfig(security_context=security),
    )


PROPAGATION = {
    "None": api.PROPAGATION_PRIVATE,
    "HostToContainer": api.PROPAGATION_HOST_TO_CONTAINER,
    "Bidirectional": api.PROPAGATION_BIDIRECTIONAL,
}


def mount(host_path: str, container_path: str, propagation: str = "None") -> api.Mount:
    """A hostPath volume mount, with the pod spec's mountPropagation (None, HostToContainer,
    Bidirectional)."""
    return api.Mount(
        host_path=host_path, container_path=container_path, propagation=PROPAGATION[propagation]
    )
