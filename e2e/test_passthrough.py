"""The zeropod runtime runs pods unchanged: what a user sees through CRI and on the node.

Each test drives containerd's CRI the way kubelet does, with the pod's runtime handler set to
`zeropod` (the interposing shim in front of containerd-shim-runc-v2), and checks what a user
would: HTTP served on the pod IP, ExecSync output, the CRI log file, exit codes, and nothing
left behind after stop + remove.
"""

from __future__ import annotations

import re
import uuid

from e2e.cri import ContainerSpec, Cri, wait_for
from e2e.images import APP_PORT
from e2e.node import Node


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def http_get(node: Node, ip: str, path: str = "/") -> str:
    """GET http://IP:APP_PORT/PATH from inside the node; return the body (raises on failure)."""
    res = node.run(
        ["curl", "-sS", "--fail", "--max-time", "10", f"http://{ip}:{APP_PORT}{path}"], timeout=30
    )
    assert res.returncode == 0, f"curl {ip}{path}: rc={res.returncode} {res.stderr.strip()}"
    return res.stdout


def node_processes(node: Node) -> list[str]:
    return node.run(["ps", "-eo", "pid,args", "--no-headers"], check=True).stdout.splitlines()


def shim_processes(node: Node, pod_id: str) -> list[str]:
    """The zeropod interposer and runc shim processes serving POD_ID, as `pid args` lines."""
    return [
        line
        for line in node_processes(node)
        if ("containerd-shim" in line or "zeropod.shim" in line) and pod_id in line
    ]


def test_pod_serves_http_exec_and_logs(node: Node, cri: Cri) -> None:
    with cri.pod(_name("serve"), [ContainerSpec("app", "counter")]) as running:
        cid = running.containers["app"]
        assert cri.container_state(cid) == "CONTAINER_RUNNING"
        ip = cri.pod_ip(running.pod)

        assert [http_get(node, ip) for _ in range(3)] == ["count=1\n", "count=2\n", "count=3\n"]

        # The pod really runs under the interposer, not straight under runc's shim.
        shims = shim_processes(node, running.pod.id)
        assert any("zeropod" in line for line in shims), shims

        code, out, err = cri.exec_sync(cid, ["echo", "hello from exec"])
        assert (code, out, err) == (0, b"hello from exec\n", b"")
        code, _, _ = cri.exec_sync(cid, ["sh", "-c", "exit 3"])
        assert code == 3

        log_file = node.host_path(cri.log_file(cid))
        marker = uuid.uuid4().hex
        http_get(node, ip, f"/log?msg=before-{marker}")
        wait_for(lambda: f"before-{marker}" in log_file.read_text(), 10, what="log line")
        # kubelet's log rotation: the runtime reopens the log file, lines keep coming.
        log_file.rename(log_file.with_suffix(".rotated"))
        cri.reopen_container_log(cid)
        http_get(node, ip, f"/log?msg=after-{marker}")
        wait_for(
            lambda: log_file.exists() and f"after-{marker}" in log_file.read_text(),
            10,
            what="log line after ReopenContainerLog",
        )
        line = next(x for x in log_file.read_text().splitlines() if f"after-{marker}" in x)
        assert re.match(r"^\S+ stdout F after-" + marker + "$", line), line


def test_exit_code_reaches_cri(node: Node, cri: Cri) -> None:
    with cri.pod(_name("exit"), [ContainerSpec("app", "counter")]) as running:
        cid = running.containers["app"]
        ip = cri.pod_ip(running.pod)
        node.run(["curl", "-sS", "--max-time", "5", f"http://{ip}:{APP_PORT}/exit?code=42"])
        status = cri.wait_container_state(cid, "CONTAINER_EXITED", timeout=30)
        assert status.exit_code == 42


def test_kill_gives_cri_the_signal_exit_code(node: Node, cri: Cri) -> None:
    with cri.pod(_name("kill"), [ContainerSpec("app", "counter")]) as running:
        cid = running.containers["app"]
        pid = cri.task_pid(cid)
        node.run(["kill", "-KILL", str(pid)], check=True)
        status = cri.wait_container_state(cid, "CONTAINER_EXITED", timeout=30)
        assert status.exit_code == 137


def test_stop_and_remove_leave_nothing_behind(node: Node, cri: Cri) -> None:
    sockets_before = set(node.run(["ls", "/run/containerd/s"]).stdout.split())
    with cri.pod(_name("clean"), [ContainerSpec("app", "counter")]) as running:
        pod_id = running.pod.id
        cid = running.containers["app"]
        app_pid = cri.task_pid(cid)
        assert shim_processes(node, pod_id)
        ids = (pod_id, cid)
    # cri.pod stopped and removed the container and the pod.

    def leftovers() -> dict[str, list[str]]:
        procs = [p for p in node_processes(node) if any(i in p for i in ids)]
        if node.run(["test", "-e", f"/proc/{app_pid}"]).returncode == 0:
            procs.append(f"app pid {app_pid}")
        mounts = [
            m
            for m in node.run(["cat", "/proc/self/mountinfo"], check=True).stdout.splitlines()
            if any(i in m for i in ids)
        ]
        sockets = sorted(set(node.run(["ls", "/run/containerd/s"]).stdout.split()) - sockets_before)
        cgroups = [
            c
            for i in ids
            for c in node.run(["find", "/sys/fs/cgroup", "-name", f"*{i}*"]).stdout.split()
        ]
        found = {"processes": procs, "mounts": mounts, "sockets": sockets, "cgroups": cgroups}
        return {k: v for k, v in found.items() if v}

    wait_for(lambda: not leftovers(), 15, what="no leftovers")
