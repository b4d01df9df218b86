"""A small kubelet-like CRI client (runtime.v1 over gRPC) for the end-to-end tests.

No generated gRPC stubs exist, so each call is built from the CRI service descriptor in
`zeropod._gen.cri.runtime.v1.api_pb2`: the method path, request and response types all come
from the .proto. Every call has a deadline; a failed call raises `CriError` naming the method
and the gRPC status. Requests are shaped the way kubelet shapes them (pod log directory
/var/log/pods/<namespace>_<name>_<uid>, container log path <name>/<attempt>.log, pod-scoped
network and IPC namespaces) so the runtime sees what it would see on a real node.

`Cri.pod(...)` is the fixture-friendly entry point: it runs a pod with its containers and
always stops and removes them again, also when the test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from e2e.cri_config import container_config, image_ref, pod_config
from zeropod._gen.cri.runtime.v1 import api_pb2 as api

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_TIMEOUT = 30.0
DEFAULT_HANDLER = "zeropod"
STATE_NAMES = {v: k for k, v in api.ContainerState.items()}


class CriError(Exception):
    """A CRI call failed; `code` is the gRPC status code (e.g. grpc.StatusCode.NOT_FOUND)."""

    def __init__(self, method: str, code: grpc.StatusCode | None, details: str) -> None:
        super().__init__(f"CRI {method} failed: {code.name if code else 'UNKNOWN'}: {details}")
        self.method = method
        self.code = code
        self.details = details


@dataclasses.dataclass(frozen=True)
class Method:
    """One CRI RPC: its full gRPC path and message types."""

    path: str
    request: type
    response: type


def _methods() -> dict[str, Method]:
    methods = {}
    for service in api.DESCRIPTOR.services_by_name.values():
        for m in service.methods:
            methods[m.name] = Method(
                f"/{service.full_name}/{m.name}",
                getattr(api, m.input_type.name),
                getattr(api, m.output_type.name),
            )
    return methods


# Method name (e.g. "RunPodSandbox") -> path and types, for RuntimeService and ImageService.
METHODS = _methods()


@dataclasses.dataclass(frozen=True)
class Pod:
    """A running pod sandbox and the config it was created with (CreateContainer needs it)."""

    id: str
    name: str
    namespace: str
    uid: str
    runtime_handler: str
    log_directory: str
    config: api.PodSandboxConfig


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """What `Cri.pod` creates: a container of a test image (short name or full reference)."""

    name: str
    image: str
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    args: Sequence[str] = ()
    command: Sequence[str] = ()
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    run_as_user: int | None = None
    """securityContext.runAsUser (and runAsGroup, the same id); None: the image's user."""
    privileged: bool = False
    mounts: Sequence[tuple[str, ...]] = ()
    """(host path, container path[, mountPropagation]) like hostPath volumes (cri_config.mount)."""


@dataclasses.dataclass(frozen=True)
class RunningPod:
    """What `Cri.pod` yields: the pod and its container ids by container name."""

    pod: Pod
    containers: dict[str, str]


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Call PREDICATE every INTERVAL seconds until it returns something truthy; return that.

    Raises TimeoutError naming WHAT and the last value once TIMEOUT seconds have passed.
    Exceptions from PREDICATE propagate: catch the expected ones inside the predicate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; last: {value!r}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


class Cri:
    """A CRI client on containerd's unix socket SOCKET_PATH (a host path; may go via /proc).

    NODE_ROOT, when given, is the host path of the node's root (e.g. /proc/<leader>/root):
    the client then creates pod and container log directories there, as kubelet would.
    """

    def __init__(
        self,
        socket_path: str | Path,
        node_root: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.socket_path = str(socket_path)
        self.node_root = Path(node_root) if node_root is not None else None
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix:{self.socket_path}")
        self._calls: dict[str, Callable[..., Any]] = {}

    @classmethod
    def for_node(cls, node: Any, timeout: float = DEFAULT_TIMEOUT) -> Cri:
        """A client for the test node's containerd (an e2e.node.Node), reached from the host."""
        return cls(node.containerd_socket, node_root=node.host_path("/"), timeout=timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Cri:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, name: str, request: Any, timeout: float | None = None) -> Any:
        """Invoke CRI method NAME (e.g. "Version") with REQUEST; return the response message."""
        method = METHODS[name]
        if not isinstance(request, method.request):
            raise TypeError(f"{name} takes {method.request.__name__}, not {type(request)}")
        fn = self._calls.get(name)
        if fn is None:
            fn = self._channel.unary_unary(
                method.path,
                request_serializer=method.request.SerializeToString,
                response_deserializer=method.response.FromString,
            )
            self._calls[name] = fn
        try:
            return fn(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            details = err.details() if isinstance(err, grpc.Call) else str(err)
            raise CriError(name, code, details or "") from err

    def _mkdir_in_node(self, path: str) -> None:
        if self.node_root is not None:
            (self.node_root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)

    # --- runtime and images -------------------------------------------------------------

    def version(self) -> api.VersionResponse:
        return self.call("Version", api.VersionRequest(version="v1"))

    def list_images(self) -> list[api.Image]:
        return list(self.call("ListImages", api.ListImagesRequest()).images)

    def image_status(self, image: str) -> api.Image | None:
        """The image's status, or None when the runtime does not have IMAGE."""
        resp = self.call(
            "ImageStatus", api.ImageStatusRequest(image=api.ImageSpec(image=image_ref(image)))
        )
        return resp.image if resp.HasField("image") else None

    # --- pods ---------------------------------------------------------------------------

    def run_pod(
        self,
        name: str,
        namespace: str = "default",
        runtime_handler: str = DEFAULT_HANDLER,
        annotations: Mapping[str, str] | None = None,
        uid: str = "",
        port_mappings: Sequence[tuple[int, int]] = (),
        cgroup_parent: str = "",
        timeout: float = 120.0,
        privileged: bool = False,
        host_pid: bool = False,
    ) -> Pod:
        """RunPodSandbox with RUNTIME_HANDLER, after creating the pod log directory like kubelet."""
        config = pod_config(
            name,
            namespace,
            uid,
            annotations=annotations,
            port_mappings=port_mappings,
            cgroup_parent=cgroup_parent,
            privileged=privileged,
            host_pid=host_pid,
        )
        self._mkdir_in_node(config.log_directory)
        req = api.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        resp = self.call("RunPodSandbox", req, timeout=timeout)
        meta = config.metadata
        log.info(
            "pod %s/%s runs as %s (handler %s)",
            namespace,
            name,
            resp.pod_sandbox_id,
            runtime_handler,
        )
        return Pod(
            resp.pod_sandbox_id,
            meta.name,
            meta.namespace,
            meta.uid,
            runtime_handler,
            config.log_directory,
            config,
        )

    def pod_status(self, pod: Pod | str) -> api.PodSandboxStatus:
        pod_id = pod.id if isinstance(pod, Pod) else pod
        return self.call(
            "PodSandboxStatus", api.PodSandboxStatusRequest(pod_sandbox_id=pod_id)
        ).status

    def pod_ip(self, pod: Pod | str) -> str:
        """The pod's primary IP address (raises CriError if the pod is unknown)."""
        return self.pod_status(pod).network.ip

    def stop_pod(self, pod: Pod | str, timeout: float = 60.0) -> None:
        pod_id = pod.id if isinstance(pod, Pod) else pod
        self.call("StopPodSandbox", api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout)

    def remove_pod(self, pod: Pod | str, timeout: float = 60.0) -> None:
        pod_id = pod.id if isinstance(pod, Pod) else pod
        self.call("RemovePodSandbox", api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout)

    def list_pods(self) -> list[api.PodSandbox]:
        return list(self.call("ListPodSandbox", api.ListPodSandboxRequest()).items)

    # --- containers ---------------------------------------------------------------------

    def create_container(
        self,
        pod: Pod,
        name: str,
        image: str,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        command: Sequence[str] = (),
        annotations: Mapping[str, str] | None = None,
        log_path: str | None = None,
        timeout: float = 60.0,
        run_as_user: int | None = None,
        privileged: bool = False,
        mounts: Sequence[tuple[str, ...]] = (),
    ) -> str:
        """CreateContainer in POD from IMAGE (test image name or full reference); return its id."""
        host_pid = pod.config.linux.security_context.namespace_options.pid == api.NODE
        config = container_config(
            name,
            image,
            env,
            args,
            command,
            annotations,
            log_path,
            run_as_user,
            privileged,
            mounts,
            host_pid,
        )
        self._mkdir_in_node(str(Path(pod.log_directory, config.log_path).parent))
        req = api.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=config, sandbox_config=pod.config
        )
        return self.call("CreateContainer", req, timeout=timeout).container_id

    def start_container(self, container_id: str, timeout: float = 60.0) -> None:
        self.call("StartContainer", api.StartContainerRequest(container_id=container_id), timeout)

    def container_status(self, container_id: str) -> api.ContainerStatus:
        req = api.ContainerStatusRequest(container_id=container_id)
        return self.call("ContainerStatus", req).status

    def container_state(self, container_id: str) -> str:
        """The container's state name, e.g. "CONTAINER_RUNNING"."""
        return STATE_NAMES[self.container_status(container_id).state]

    def wait_container_state(
        self, container_id: str, state: str = "CONTAINER_RUNNING", timeout: float = 30.0
    ) -> api.ContainerStatus:
        """Poll ContainerStatus until the container is in STATE (a ContainerState name)."""
        want = api.ContainerState.Value(state)

        def reached() -> api.ContainerStatus | None:
            status = self.container_status(container_id)
            return status if status.state == want else None

        return wait_for(reached, timeout, what=f"container {container_id} in {state}")

    def exec_sync(
        self, container_id: str, cmd: Sequence[str], timeout: float = 10.0
    ) -> tuple[int, bytes, bytes]:
        """ExecSync CMD in the container; returns (exit_code, stdout, stderr)."""
        req = api.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=int(timeout))
        resp = self.call("ExecSync", req, timeout=timeout + 10.0)
        return resp.exit_code, resp.stdout, resp.stderr

    def reopen_container_log(self, container_id: str) -> None:
        self.call("ReopenContainerLog", api.ReopenContainerLogRequest(container_id=container_id))

    def stop_container(self, container_id: str, grace: int = 10) -> None:
        """StopContainer: SIGTERM, then SIGKILL after GRACE seconds."""
        req = api.StopContainerRequest(container_id=container_id, timeout=grace)
        self.call("StopContainer", req, timeout=grace + DEFAULT_TIMEOUT)

    def remove_container(self, container_id: str) -> None:
        self.call("RemoveContainer", api.RemoveContainerRequest(container_id=container_id))

    def list_containers(self, pod: Pod | str | None = None) -> list[api.Container]:
        """All containers, or those of POD."""
        flt = api.ContainerFilter()
        if pod is not None:
            flt.pod_sandbox_id = pod.id if isinstance(pod, Pod) else pod
        return list(self.call("ListContainers", api.ListContainersRequest(filter=flt)).containers)

    def task_pid(self, container_id: str) -> int:
        """The pid containerd recorded when the task started (CRI's verbose status, as
        `crictl inspect` shows it; after a zeropod restore the process has a new one)."""
        request = api.ContainerStatusRequest(container_id=container_id, verbose=True)
        return int(json.loads(self.call("ContainerStatus", request).info["info"])["pid"])

    def log_file(self, container_id: str) -> str:
        """The container's CRI log file as a path inside the node (use node.host_path to read)."""
        return self.container_status(container_id).log_path

    # --- the fixture-friendly helper ----------------------------------------------------

    @contextlib.contextmanager
    def pod(
        self,
        name: str,
        containers: Sequence[ContainerSpec],
        namespace: str = "default",
        runtime_handler: str = DEFAULT_HANDLER,
        annotations: Mapping[str, str] | None = None,
        start: bool = True,
        port_mappings: Sequence[tuple[int, int]] = (),
        uid: str = "",
        cgroup_parent: str = "",
    ) -> Iterator[RunningPod]:
        """Run a pod with CONTAINERS (started unless START is false); always clean up after.

        Cleanup stops and removes every container, then the pod, carrying on past failures;
        a cleanup failure is raised only when the body itself succeeded.
        """
        pod = self.run_pod(
            name,
            namespace,
            runtime_handler,
            annotations,
            uid=uid,
            port_mappings=port_mappings,
            cgroup_parent=cgroup_parent,
            privileged=any(spec.privileged for spec in containers),
        )
        created: dict[str, str] = {}
        failed = True
        try:
            for spec in containers:
                created[spec.name] = self.create_container(
                    pod,
                    spec.name,
                    spec.image,
                    spec.env,
                    spec.args,
                    spec.command,
                    spec.annotations,
                    run_as_user=spec.run_as_user,
                    privileged=spec.privileged,
                    mounts=spec.mounts,
                )
                if start:
                    self.start_container(created[spec.name])
            yield RunningPod(pod, created)
            failed = False
        finally:
            errors = self.cleanup(pod, list(created.values()))
            if errors and not failed:
                raise errors[0]

    def cleanup(self, pod: Pod, container_ids: Sequence[str]) -> list[CriError]:
        """Stop and remove CONTAINER_IDS and POD; return the errors instead of raising them."""
        steps: list[tuple[str, Callable[[], None]]] = []
        for cid in container_ids:
            steps.append((f"stop {cid}", lambda cid=cid: self.stop_container(cid, grace=5)))
            steps.append((f"remove {cid}", lambda cid=cid: self.remove_container(cid)))
        steps.append((f"stop pod {pod.id}", lambda: self.stop_pod(pod)))
        steps.append((f"remove pod {pod.id}", lambda: self.remove_pod(pod)))
        errors = []
        for what, step in steps:
            try:
                step()
            except CriError as err:
                if err.code == grpc.StatusCode.NOT_FOUND:
                    continue
                log.warning("cleanup of pod %s: %s: %s", pod.name, what, err)
                errors.append(err)
        return errors
