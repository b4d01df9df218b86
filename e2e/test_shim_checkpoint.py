"""Scale to zero in the shim, driven through the interposer's own control socket (no daemon).

A counter pod runs under the `zeropod` handler. A tiny client inside the node sends the
interposer `checkpoint` and `restore` (docs/scale-to-zero.md), the way the daemon will. What a
user sees: CRI keeps saying RUNNING while the process is gone, the in-memory count goes on
across cycles, log lines written after a restore reach the CRI log file, a container stopped
and removed while asleep leaves nothing behind, and a corrupted image comes back cold.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from e2e.cri import ContainerSpec, Cri, CriError, wait_for
from e2e.images import APP_PORT
from e2e.node import Node, runc_shim_pid
from zeropod._gen.cri.runtime.v1 import api_pb2 as api

IMAGES = "/var/lib/zeropod/images/e2e"
TASKS = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(120)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
buf = b""
while not buf.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
print(buf.decode())
"""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def control(node: Node, cid: str, op: str, **fields: Any) -> dict[str, Any]:
    """Send one request to the interposer serving CID (found from its bundle's address)."""
    bundle = node.host_path(f"{TASKS}/{cid}")
    if (bundle / "address").exists():
        address = (bundle / "address").read_text()
    else:  # containerd 2.x: containers of a pod reach the sandbox's shim via bootstrap.json
        address = json.loads((bundle / "bootstrap.json").read_text())["address"]
    socket_path = address.removeprefix("unix://").removesuffix(".sock") + ".ctl.sock"
    target = {} if op == "status" else {"container_id": cid}  # status names no container
    message = json.dumps({"v": 1, "op": op, **target, **fields})
    res = node.run(["python3", "-c", CLIENT, socket_path, message], timeout=150)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def shim_status(node: Node, cid: str) -> dict[str, Any]:
    answer = control(node, cid, "status")
    return next(c for c in answer["containers"] if c["container_id"] == cid)


def http_get(node: Node, ip: str, path: str = "/") -> str:
    res = node.run(["curl", "-sS", "--max-time", "10", f"http://{ip}:{APP_PORT}{path}"])
    assert res.returncode == 0, f"curl {ip}{path}: {res.stderr.strip()}"
    return res.stdout


def alive(node: Node, pid: int) -> bool:
    return node.run(["test", "-e", f"/proc/{pid}"]).returncode == 0


def assert_running_for_cri(cri: Cri, cid: str) -> None:
    status = cri.container_status(cid)
    assert cri.container_state(cid) == "CONTAINER_RUNNING"
    assert (status.finished_at, status.exit_code) == (0, 0), status


def checkpoint(node: Node, cid: str, image_dir: str) -> dict[str, Any]:
    answer = control(node, cid, "checkpoint", image_dir=image_dir)
    assert answer["ok"], answer
    assert shim_status(node, cid)["phase"] == "scaled_down"
    return answer


def assert_zeropods_criu_options(node: Node, cid: str, image_dir: str) -> None:
    """The node's CRIU is zeropod's build: the container's CRIU config asks for its options;
    the dump saw the cgroup frozen at once or polled it within the step (freeze-poll-fast),
    and its tmpfs mounts are plain tarballs (tmpfs-no-gzip), which the restore then reads."""
    config = node.host_path(f"/run/zeropod/criu.d/{cid}.conf").read_text().splitlines()
    assert {"freeze-poll-fast", "tmpfs-no-gzip", "tmpfs-untar-inline"} <= set(config), config
    images = node.host_path(image_dir)
    log = (images / "dump.log").read_text()
    assert "(freeze-poll-fast)" in log or "freezing processes: 0 attempts done" in log, [
        line for line in log.splitlines() if "freez" in line
    ]
    tarballs = sorted(images.glob("tmpfs-dev-*.img"))
    assert tarballs, sorted(p.name for p in images.iterdir())  # /dev at least
    for tarball in tarballs:
        head = tarball.read_bytes()[:512]
        assert head[257:262] == b"ustar", f"{tarball.name}: not a plain tarball: {head[:4]!r}"


DEV_LISTING = """
import os, sys
root = sys.argv[1]
top = os.lstat(root).st_dev
for base, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if os.lstat(os.path.join(base, d)).st_dev == top]
    for name in ["", *dirs, *files]:
        path = os.path.join(base, name)
        st = os.lstat(path)
        link = os.readlink(path) if os.path.islink(path) else ""
        rdev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if st.st_rdev else ""
        print(os.path.relpath(path, root), oct(st.st_mode), st.st_uid, st.st_gid,
              int(st.st_mtime), link, rdev)
"""


def dev_listing(node: Node, pid: int) -> list[str]:
    """The container's /dev tmpfs as tar restores it: names, types and modes, owners,
    whole-second times, link targets, device numbers (not what other mounts hold)."""
    out = node.run(["python3", "-c", DEV_LISTING, f"/proc/{pid}/root/dev"], check=True).stdout
    return sorted(out.splitlines())


def test_counter_survives_three_cycles_and_logs_go_on(node: Node, cri: Cri) -> None:
    with cri.pod(_name("ckpt"), [ContainerSpec("app", "counter")]) as running:
        cid = running.containers["app"]
        ip = cri.pod_ip(running.pod)
        log_file = node.host_path(cri.log_file(cid))
        assert http_get(node, ip) == "count=1\n"
        expected = 2
        for cycle in range(3):
            image_dir = f"{IMAGES}/{uuid.uuid4().hex}"
            dev_before = dev_listing(node, shim_status(node, cid)["pid"])
            slept = checkpoint(node, cid, image_dir)
            assert not alive(node, slept["pid"]), "the dumped process still runs"
            if cycle == 0:
                assert_zeropods_criu_options(node, cid, image_dir)
            assert_running_for_cri(cri, cid)
            stats = cri.call("ContainerStats", api.ContainerStatsRequest(container_id=cid))
            assert stats.stats.memory.working_set_bytes.value == 0, stats
            woke = control(node, cid, "restore", image_dir=image_dir)
            assert woke["ok"] and woke["cold"] is False, woke
            # /dev and /sys/fs/cgroup came back from CRIU's own extraction
            # (tmpfs-untar-inline), as tar would have restored them.
            restore_log = node.host_path(f"{image_dir}/restore.log").read_text()
            assert restore_log.count("entries extracted in process") >= 2, [
                line for line in restore_log.splitlines() if "tmpfs" in line
            ]
            assert dev_listing(node, woke["pid"]) == dev_before
            assert shim_status(node, cid) | {"pid": woke["pid"]} == shim_status(node, cid)
            assert http_get(node, ip) == f"count={expected}\n"
            expected += 1
            marker = f"after-restore-{cycle}-{uuid.uuid4().hex}"
            assert http_get(node, ip, f"/log?msg={marker}")
            expected += 1
            wait_for(lambda m=marker: m in log_file.read_text(), 10, what="log line")
            node.run(["rm", "-rf", image_dir])
        assert_running_for_cri(cri, cid)
        assert shim_status(node, cid)["phase"] == "running"


def test_stop_and_remove_while_scaled_down(node: Node, cri: Cri) -> None:
    with cri.pod(_name("asleep"), [ContainerSpec("app", "counter")]) as running:
        cid = running.containers["app"]
        pod_id = running.pod.id
        image_dir = f"{IMAGES}/{uuid.uuid4().hex}"
        slept = checkpoint(node, cid, image_dir)
        runc_shim = runc_shim_pid(node, pod_id)
        cri.stop_container(cid, grace=5)
        status = cri.wait_container_state(cid, "CONTAINER_EXITED", timeout=30)
        assert status.exit_code == 128 + 15  # SIGTERM, the first signal StopContainer sends
        cri.remove_container(cid)

        def leftovers() -> dict[str, list[str]]:
            procs = [
                p
                for p in node.run(["ps", "-eo", "pid,args", "--no-headers"]).stdout.splitlines()
                if cid in p
            ]
            if alive(node, slept["pid"]):
                procs.append(f"app pid {slept['pid']}")
            found = {
                "processes": procs,
                "mounts": [  # the node's, and the runc shim's own (zeropod.shim.mountns)
                    m
                    for table in ("self", runc_shim)
                    for m in node.run(["cat", f"/proc/{table}/mountinfo"]).stdout.splitlines()
                    if cid in m
                ],
                "cgroups": node.run(["find", "/sys/fs/cgroup", "-name", f"*{cid}*"]).stdout.split(),
                "image": [image_dir] if node.run(["test", "-e", image_dir]).returncode == 0 else [],
                "bundle": [cid]
                if node.run(["test", "-e", f"{TASKS}/{cid}"]).returncode == 0
                else [],
            }
            return {k: v for k, v in found.items() if v}

        wait_for(lambda: not leftovers(), 15, what="nothing left of the container")
        # the pod's interposer still serves the pause container
        assert any(c["phase"] == "running" for c in control(node, pod_id, "status")["containers"])


def test_corrupted_image_comes_back_cold(node: Node, cri: Cri) -> None:
    with cri.pod(_name("cold"), [ContainerSpec("app", "counter")]) as running:
        cid = running.containers["app"]
        ip = cri.pod_ip(running.pod)
        assert http_get(node, ip) == "count=1\n"
        image_dir = f"{IMAGES}/{uuid.uuid4().hex}"
        checkpoint(node, cid, image_dir)
        node.run(
            ["sh", "-c", f"for f in {image_dir}/*.img; do echo garbage > $f; done"], check=True
        )
        woke = control(node, cid, "restore", image_dir=image_dir, fallback=True)  # no daemon
        assert woke["ok"] and woke["cold"] is True, woke
        assert image_dir in woke["error"]
        assert http_get(node, ip) == "count=1\n"  # a fresh process
        assert_running_for_cri(cri, cid)
        node.run(["rm", "-rf", image_dir])


def test_exec_wakes_a_scaled_down_container(node: Node, cri: Cri) -> None:
    """Without a daemon to ask, the shim restores by itself before forwarding the exec."""
    with cri.pod(_name("exec"), [ContainerSpec("app", "counter")]) as running:
        cid = running.containers["app"]
        ip = cri.pod_ip(running.pod)
        assert http_get(node, ip) == "count=1\n"
        image_dir = f"{IMAGES}/{uuid.uuid4().hex}"
        checkpoint(node, cid, image_dir)
        code, out, err = cri.exec_sync(cid, ["echo", "awake"])
        assert (code, out, err) == (0, b"awake\n", b"")
        assert shim_status(node, cid)["phase"] == "running"
        assert http_get(node, ip) == "count=2\n"  # restored, not started cold
        assert_running_for_cri(cri, cid)
        node.run(["rm", "-rf", image_dir])


def test_containerd_restart_while_scaled_down(node: Node, cri: Cri) -> None:
    """containerd reconnects to the interposer (State, Wait, Connect) and still sees RUNNING."""
    with cri.pod(_name("restart"), [ContainerSpec("app", "counter")]) as running:
        cid = running.containers["app"]
        ip = cri.pod_ip(running.pod)
        assert http_get(node, ip) == "count=1\n"
        image_dir = f"{IMAGES}/{uuid.uuid4().hex}"
        checkpoint(node, cid, image_dir)
        node.run(["systemctl", "restart", "containerd"], check=True)

        def cri_sees_it() -> str | None:
            try:
                return cri.container_state(cid)
            except CriError:
                return None  # containerd is still starting

        assert wait_for(cri_sees_it, 30, what="CRI after restart") == "CONTAINER_RUNNING"
        assert_running_for_cri(cri, cid)
        woke = control(node, cid, "restore", image_dir=image_dir)
        assert woke["ok"] and woke["cold"] is False, woke
        assert http_get(node, ip) == "count=2\n"
        assert_running_for_cri(cri, cid)
        node.run(["rm", "-rf", image_dir])
