"""Real servers from Debian's archive as pods, and their own clients in another pod.

The server pods run the locally built image ``servers`` (images/build-servers) under the
``zeropod`` handler, each as a real deployment would: PostgreSQL and Redis as their own
users (``runAsUser``), memcached started as root and dropping to ``memcache`` before it
binds, nginx as a root master with ``www-data`` workers. The clients (psql, redis-cli, curl,
bash's /dev/tcp for memcached's text protocol) run in a client pod under plain runc, in a
namespace of their own: traffic from another pod, as in a cluster. State is put in and read
back through each server's own protocol.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from e2e.cri import ContainerSpec, Cri, RunningPod, wait_for
from e2e.scaling import Daemon

IMAGE = "servers"
CLIENT_NAMESPACE = "toolbox"


@dataclasses.dataclass(frozen=True)
class Server:
    """How a pod runs one of the servers: container name, command, port, user."""

    container: str
    command: tuple[str, ...]
    port: int
    user: str | None = None
    """The image's user the whole container runs as (runAsUser), or None for root."""
    process_tree: bool = False
    hello: bytes = b""
    """The first bytes a client of the server's own protocol sends (benchmarks time them)."""
    expect: bytes = b""
    """The start of the server's answer to ``hello``."""
    image: str = "servers"
    """The test image it runs from (images/build-servers --image)."""


POSTGRES = Server(
    "postgres",
    (
        "/usr/lib/postgresql/15/bin/postgres",
        "-D",
        "/var/lib/postgresql/15/main",
        "-c",
        "config_file=/etc/postgresql/15/main/postgresql.conf",
        "-c",
        "ssl=off",
        "-c",
        "unix_socket_directories=",
    ),
    5432,
    user="postgres",
    process_tree=True,
    hello=bytes.fromhex("0000000804d2162f"),  # SSLRequest: the server answers N (no TLS)
    expect=b"N",
)
REDIS = Server(
    "redis",
    ("redis-server", "/etc/redis/redis.conf"),
    6379,
    user="redis",
    hello=b"PING\r\n",
    expect=b"+PONG",
)
MEMCACHED = Server(
    "memcached",
    ("memcached", "-u", "memcache", "-l", "0.0.0.0", "-p", "11211", "-m", "64"),
    11211,
    hello=b"version\r\n",
    expect=b"VERSION",
)
NGINX = Server(
    "nginx",
    ("nginx",),
    80,
    process_tree=True,
    hello=b"GET / HTTP/1.0\r\n\r\n",
    expect=b"HTTP/1.1 ",
)
HEAPSERVER = Server(
    "heapserver",
    (
        "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
        "-XX:+UseSerialGC",
        "-Xmx640m",
        "-XX:-UsePerfData",  # no hsperfdata file mapped from /tmp
        "-cp",
        "/opt/heapserver",
        "HeapServer",
    ),
    8080,
    user="nobody",
    hello=b"GET / HTTP/1.0\r\n\r\n",
    expect=b"HTTP/1.1 200",
    image="jvm",
)
"""A JVM service holding ~390 MB of live objects (images/src/HeapServer.java), as nobody."""
ALL = (POSTGRES, REDIS, MEMCACHED, NGINX, HEAPSERVER)
CACHED_ROOTFS = "images/servers/rootfs"
"""Where images/build-servers keeps the image's rootfs, under ZEROPOD_CACHE."""


def image_uid(user: str) -> int:
    """USER's uid in the image (Debian assigns them at install), from the cached rootfs."""
    cache = os.environ.get("ZEROPOD_CACHE", "/var/cache/zeropod")
    for line in (Path(cache) / CACHED_ROOTFS / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2])
    raise KeyError(f"no user {user!r} in the servers image")


class Toolbox:
    """A client pod (plain runc) with the servers' own clients; commands run via ExecSync."""

    def __init__(self, cri: Cri, container_id: str) -> None:
        self.cri = cri
        self.container_id = container_id
        self._uids: dict[str, int] = {}

    def sh(self, script: str, timeout: float = 30.0) -> str:
        """Run SCRIPT with bash in the client pod; returns stdout, raises on failure."""
        code, out, err = self.cri.exec_sync(self.container_id, ["bash", "-c", script], timeout)
        if code != 0:
            raise AssertionError(f"client exited {code}: {script!r}: {err.decode()[-2000:]}")
        return out.decode()

    def uid(self, user: str) -> int:
        """The image's uid of USER (Debian assigns them at install time)."""
        if user not in self._uids:
            self._uids[user] = int(self.sh(f"id -u {user}").strip())
        return self._uids[user]


@contextlib.contextmanager
def toolbox(cri: Cri) -> Iterator[Toolbox]:
    """The client pod, created once per module by the fixture that uses it."""
    name = f"toolbox-{uuid.uuid4().hex[:5]}"
    spec = ContainerSpec("shell", IMAGE, command=["sleep", "infinity"])
    with cri.pod(name, [spec], namespace=CLIENT_NAMESPACE, runtime_handler="runc") as running:
        yield Toolbox(cri, running.containers["shell"])


@contextlib.contextmanager
def server_pod(
    cri: Cri,
    daemon: Daemon,
    tools: Toolbox,
    server: Server,
    name: str,
    namespace: str,
    annotations: dict[str, str],
    extra: Sequence[ContainerSpec] = (),
) -> Iterator[tuple[RunningPod, str, str]]:
    """A pod running SERVER (plus EXTRA containers); yields (pod, container id, pod IP) once
    the server answers on its port and the daemon manages it."""
    spec = ContainerSpec(
        server.container,
        server.image,
        command=list(server.command),
        run_as_user=tools.uid(server.user) if server.user else None,
    )
    with cri.pod(name, [spec, *extra], namespace=namespace, annotations=annotations) as running:
        cid = running.containers[server.container]
        ip = cri.pod_ip(running.pod)
        wait_for(lambda: _answers(tools, ip, server.port), 30, interval=0.2, what=f"{name} answers")
        daemon.wait_state(cid, "RUNNING")
        yield running, cid, ip


def _answers(tools: Toolbox, ip: str, port: int) -> bool:
    try:
        tools.sh(f"exec 3<>/dev/tcp/{ip}/{port}", timeout=5)
    except AssertionError:
        return False
    return True


def wait_asleep(daemon: Daemon, cid: str, timeout: float = 30.0) -> dict:
    """Wait until the container is SCALED_DOWN on its own (idle); returns its status."""
    return daemon.wait_state(cid, "SCALED_DOWN", timeout=timeout)


def restored(daemon: Daemon, cid: str, since_cold_starts: int) -> dict:
    """Wait until RUNNING again and check it was a restore, not a cold start."""
    info = daemon.wait_state(cid, "RUNNING", timeout=30)
    assert info["cold_starts"] == since_cold_starts, f"started cold: {info['history'][-3:]}"
    assert info["restore_errors"] == 0, info["history"][-3:]
    return info


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + seconds
