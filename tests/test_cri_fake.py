"""The CRI client against an in-process fake CRI server: right method paths, right fields."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from e2e import cri
from e2e.cri import ContainerSpec, Cri, CriError
from zeropod._gen.cri.runtime.v1 import api_pb2 as api


class FakeCri:
    """Records every call as (method name, request); answers from `responses` or empty."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.responses: dict[str, Callable[[Any], Any]] = {}
        self.fail: dict[str, grpc.StatusCode] = {}
        self.lock = threading.Lock()

    def handler(self, name: str, method: cri.Method) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with self.lock:
                self.calls.append((name, request))
            if name in self.fail:
                context.abort(self.fail[name], f"fake {name} failure")
            answer = self.responses.get(name)
            return answer(request) if answer else method.response()

        return handle

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def requests(self, name: str) -> list[Any]:
        return [req for n, req in self.calls if n == name]


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeCri, Path]]:
    fake = FakeCri()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for name, method in cri.METHODS.items():
        service = method.path.split("/")[1]
        by_service.setdefault(service, {})[name] = grpc.unary_unary_rpc_method_handler(
            fake.handler(name, method),
            request_deserializer=method.request.FromString,
            response_serializer=method.response.SerializeToString,
        )
    for service, handlers in by_service.items():
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, handlers)])
    socket = tmp_path / "cri.sock"
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    yield fake, socket
    server.stop(grace=None)


@pytest.fixture
def client(fake: tuple[FakeCri, Path], tmp_path: Path) -> Iterator[Cri]:
    with Cri(fake[1], node_root=tmp_path / "node", timeout=5) as c:
        yield c


def test_version_and_images(fake: tuple[FakeCri, Path], client: Cri) -> None:
    f, _ = fake
    f.responses["Version"] = lambda req: api.VersionResponse(runtime_name="fake")
    f.responses["ImageStatus"] = lambda req: api.ImageStatusResponse(
        image=api.Image(id="sha256:1", repo_tags=[req.image.image])
    )
    assert client.version().runtime_name == "fake"
    assert client.version().runtime_name == "fake"  # the cached method callable works again
    assert client.list_images() == []
    assert list(client.image_status("pause").repo_tags) == ["localhost/zeropod-test/pause:1"]
    f.responses["ImageStatus"] = lambda req: api.ImageStatusResponse()
    assert client.image_status("nope:1") is None
    assert f.names() == ["Version", "Version", "ListImages", "ImageStatus", "ImageStatus"]


def test_run_pod_sends_handler_annotations_and_makes_log_dir(
    fake: tuple[FakeCri, Path], client: Cri, tmp_path: Path
) -> None:
    f, _ = fake
    f.responses["RunPodSandbox"] = lambda req: api.RunPodSandboxResponse(pod_sandbox_id="p1")
    pod = client.run_pod("web", annotations={"zeropod.ctrox.dev/ports-map": "c=8080"}, uid="u")
    (req,) = f.requests("RunPodSandbox")
    assert req.runtime_handler == "zeropod"
    assert dict(req.config.annotations) == {"zeropod.ctrox.dev/ports-map": "c=8080"}
    assert req.config.log_directory == pod.log_directory == "/var/log/pods/default_web_u"
    assert (pod.id, pod.name, pod.uid) == ("p1", "web", "u")
    assert (tmp_path / "node/var/log/pods/default_web_u").is_dir()


def test_container_calls(fake: tuple[FakeCri, Path], client: Cri, tmp_path: Path) -> None:
    f, _ = fake
    f.responses["RunPodSandbox"] = lambda req: api.RunPodSandboxResponse(pod_sandbox_id="p1")
    f.responses["CreateContainer"] = lambda req: api.CreateContainerResponse(container_id="c1")
    f.responses["ExecSync"] = lambda req: api.ExecSyncResponse(
        stdout=" ".join(req.cmd).encode(), stderr=b"", exit_code=3
    )
    f.responses["ContainerStatus"] = lambda req: api.ContainerStatusResponse(
        status=api.ContainerStatus(id=req.container_id, state=api.CONTAINER_RUNNING, log_path="/l")
    )
    f.responses["PodSandboxStatus"] = lambda req: api.PodSandboxStatusResponse(
        status=api.PodSandboxStatus(network=api.PodSandboxNetworkStatus(ip="10.88.0.5"))
    )
    pod = client.run_pod("web", runtime_handler="runc", uid="u")
    cid = client.create_container(pod, "app", "counter", env={"PORT": "80"})
    client.start_container(cid)
    assert client.wait_container_state(cid).id == "c1"
    assert client.container_state(cid) == "CONTAINER_RUNNING"
    assert client.log_file(cid) == "/l"
    assert client.exec_sync(cid, ["echo", "hi"], timeout=4) == (3, b"echo hi", b"")
    assert client.pod_ip(pod) == "10.88.0.5"
    client.reopen_container_log(cid)
    assert client.list_containers(pod) == []
    client.stop_container(cid, grace=2)
    client.remove_container(cid)
    client.stop_pod(pod)
    client.remove_pod(pod)

    (create,) = f.requests("CreateContainer")
    assert create.pod_sandbox_id == "p1"
    assert create.config.image.image == "localhost/zeropod-test/counter:1"
    assert create.config.log_path == "app/0.log"
    assert create.sandbox_config == pod.config
    assert (tmp_path / "node/var/log/pods/default_web_u/app").is_dir()
    (exec_req,) = f.requests("ExecSync")
    assert (exec_req.container_id, list(exec_req.cmd), exec_req.timeout) == (
        "c1",
        ["echo", "hi"],
        4,
    )
    assert f.requests("ListContainers")[0].filter.pod_sandbox_id == "p1"
    assert f.requests("StopContainer")[0].timeout == 2
    assert f.requests("StopPodSandbox")[0].pod_sandbox_id == "p1"
    assert f.requests("RemovePodSandbox")[0].pod_sandbox_id == "p1"
    assert f.requests("ReopenContainerLog")[0].container_id == "c1"
    assert f.requests("RemoveContainer")[0].container_id == "c1"


def test_errors_carry_method_and_code(fake: tuple[FakeCri, Path], client: Cri) -> None:
    f, _ = fake
    f.fail["ContainerStatus"] = grpc.StatusCode.NOT_FOUND
    with pytest.raises(CriError, match="ContainerStatus failed: NOT_FOUND") as info:
        client.container_status("nope")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_unreachable_socket_fails_within_the_timeout(tmp_path: Path) -> None:
    with Cri(tmp_path / "absent.sock", timeout=0.5) as c, pytest.raises(CriError) as info:
        c.version()
    assert info.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_pod_helper_cleans_up_when_the_body_fails(fake: tuple[FakeCri, Path], client: Cri) -> None:
    f, _ = fake
    f.responses["RunPodSandbox"] = lambda req: api.RunPodSandboxResponse(pod_sandbox_id="p1")
    ids = iter(["c1", "c2"])
    f.responses["CreateContainer"] = lambda req: api.CreateContainerResponse(container_id=next(ids))
    f.fail["StopContainer"] = grpc.StatusCode.NOT_FOUND  # already gone: not an error
    specs = [ContainerSpec("a", "counter"), ContainerSpec("b", "memhog", env={"MEM_MB": "1"})]
    with pytest.raises(RuntimeError, match="test failed"), client.pod("web", specs) as running:
        assert running.containers == {"a": "c1", "b": "c2"}
        raise RuntimeError("test failed")
    assert f.names() == [
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "CreateContainer",
        "StartContainer",
        "StopContainer",
        "RemoveContainer",
        "StopContainer",
        "RemoveContainer",
        "StopPodSandbox",
        "RemovePodSandbox",
    ]


def test_pod_helper_cleans_up_when_a_container_fails_and_reports_cleanup_errors(
    fake: tuple[FakeCri, Path], client: Cri
) -> None:
    f, _ = fake
    f.responses["RunPodSandbox"] = lambda req: api.RunPodSandboxResponse(pod_sandbox_id="p1")
    f.fail["CreateContainer"] = grpc.StatusCode.INTERNAL
    with (
        pytest.raises(CriError, match="CreateContainer"),
        client.pod("web", [ContainerSpec("a", "counter")]),
    ):
        pass
    assert f.names()[-2:] == ["StopPodSandbox", "RemovePodSandbox"]

    f.calls.clear()
    del f.fail["CreateContainer"]
    f.fail["RemovePodSandbox"] = grpc.StatusCode.INTERNAL
    with pytest.raises(CriError, match="RemovePodSandbox"), client.pod("web", [], start=False):
        pass
