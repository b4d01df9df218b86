"""Installing zeropod on a node an operator already runs: the Ansible role over ssh, and the
DaemonSet's installer image as a privileged pod with the node's root at /host.

The second machine (`node/bare`) has only Debian's containerd 1.7, runc, the CNI plugins,
systemd and sshd, configured as kubeadm leaves a node (systemd cgroup driver). A real ssh
client reaches its sshd (through its network namespace) with a key. The package is built by
`make package`. What an operator must see: --check reports and changes nothing; the install
makes a pod under the `zeropod` handler sleep and wake with its state, in its pod's slice; a
second run changes nothing; uninstall leaves containerd's config byte-identical and nothing
of zeropod behind; a runc pod runs on, untouched, through all of it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import http
from e2e.cri import ContainerSpec, Cri, CriError, api, wait_for
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import Daemon, annotations

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("ZEROPOD_CACHE", "/var/cache/zeropod"))
BARE = CACHE / "bare"
ANSIBLE = CACHE / "ansible-venv" / "bin" / "ansible-playbook"
LEFTOVERS = (
    "/opt/zeropod",
    "/etc/systemd/system/zeropod.service",
    "/etc/systemd/system/zeropod@.service",
    "/run/zeropod",
    "/var/lib/zeropod",
)


def bare(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(REPO / "node" / "bare"), *args], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def fresh_machine() -> Node:
    """The second machine, booted from its base image: nothing of zeropod on it."""
    bare("start")
    pid = int(Path("/run/zeropod-bare/leader.pid").read_text())
    env = (("ZEROPOD_CACHE", str(BARE)), ("ZEROPOD_NODE_RUN", "/run/zeropod-bare"))
    return Node(root=BARE / "node" / "rootfs", leader_pid=pid, containerd="1.7", env=env)


@pytest.fixture(scope="module")
def package() -> None:
    if os.geteuid() != 0:
        pytest.skip("the second machine needs root (systemd-nspawn)")
    for step in (["scripts/package"], ["images/build-installer"]):
        subprocess.run([sys.executable, str(REPO / step[0])], check=True, capture_output=True)


@pytest.fixture
def machine(package: None) -> Iterator[Node]:
    try:
        yield fresh_machine()
    finally:
        bare("stop")


@pytest.fixture
def inventory(machine: Node, tmp_path: Path) -> Path:
    path = tmp_path / "inventory.ini"
    proxy = f"{REPO}/node/bare ssh-proxy"
    options = (
        f"-o ProxyCommand='{proxy}' -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    )
    path.write_text(
        "[zeropod_nodes]\n"
        f"zeropod-bare ansible_user=root ansible_ssh_private_key_file={BARE}/ssh/id_ed25519 "
        f'ansible_ssh_common_args="{options}" ansible_python_interpreter=/usr/bin/python3\n'
    )
    return path


def playbook(inventory: Path, name: str, *flags: str) -> tuple[dict[str, int], str]:
    """Run ansible/NAME over ssh; the PLAY RECAP counts of the node and the output."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg")}
    env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
    proc = subprocess.run(
        [str(ANSIBLE), "-i", str(inventory), str(REPO / "ansible" / name), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    recap = re.search(r"zeropod-bare\s*:\s*(.*)", proc.stdout.split("PLAY RECAP", 1)[1])
    assert recap is not None, proc.stdout[-2000:]
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}
    return counts, proc.stdout


def kubelet_pod() -> dict[str, str]:
    """A pod's uid and the slice kubelet's systemd driver puts it in (best effort QoS)."""
    uid = str(uuid.uuid4())
    return {"uid": uid, "cgroup_parent": f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice"}


def leftovers(machine: Node) -> list[str]:
    return [p for p in LEFTOVERS if (machine.root / p.lstrip("/")).exists()]


def zeropod_processes(machine: Node) -> list[str]:
    """Command lines of the node's zeropod processes (daemon, interposers, their template)."""
    ps = machine.run(["ps", "-eo", "args", "--no-headers"], check=True).stdout
    return [line for line in ps.splitlines() if "zeropod" in line and "ps -eo" not in line]


def test_the_playbook_installs_over_ssh_and_uninstall_takes_it_all_off(
    machine: Node, inventory: Path
) -> None:
    config = machine.root / "etc/containerd/config.toml"
    original = config.read_bytes()
    with (
        Cri.for_node(machine) as cri,
        cri.pod(
            f"ledger-{uuid.uuid4().hex[:5]}",
            [ContainerSpec("api-1", "counter")],
            namespace="finance",
            runtime_handler="runc",
            **kubelet_pod(),
        ) as bystander,
    ):
        runc_pid = cri.task_pid(bystander.containers["api-1"])

        # --check on a bare node: reports the changes, makes none.
        counts, out = playbook(inventory, "install.yml", "--check", "--diff")
        assert counts["changed"] >= 1 and counts["failed"] == 0
        assert "would: write /etc/containerd/config.toml" in out and "+  runtime_path" in out
        assert config.read_bytes() == original and leftovers(machine) == []

        counts, out = playbook(inventory, "install.yml")
        assert counts["changed"] == 1, out[-3000:]
        assert "done: systemctl restart containerd.service" in out
        counts, _ = playbook(inventory, "install.yml")
        assert counts["changed"] == 0  # a second run changes nothing
        version = (REPO / "pyproject.toml").read_text().split('version = "', 1)[1].split('"')[0]
        for command in ("zeropod", "zeropodctl"):
            out = machine.run([f"/opt/zeropod/venv/bin/{command}", "--version"], check=True)
            assert out.stdout.strip() == f"{command} {version}"

        scale_to_zero_on(machine, cri)

        counts, out = playbook(inventory, "uninstall.yml")
        assert counts["changed"] == 1, out[-3000:]
        assert config.read_bytes() == original
        assert leftovers(machine) == []
        # The pod's interposer ends with its runc shim; the template was stopped.
        wait_for(lambda: zeropod_processes(machine) == [], 30, what="no zeropod process left")
        units = machine.run(["systemctl", "list-units", "--all", "--no-legend", "zeropod*"])
        assert units.stdout.strip() == ""
        # The runc pod ran on through two containerd restarts: same process.
        assert cri.task_pid(bystander.containers["api-1"]) == runc_pid
        assert machine.run(["test", "-d", f"/proc/{runc_pid}"]).returncode == 0


GET = """
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=15).read().decode(), end="")
except OSError as err:
    sys.exit(f"GET {sys.argv[1]}: {err}")
"""


def get(machine: Node, url: str) -> str:
    """GET URL from the node itself (kubelet's place), with the node's own python3."""
    proc = machine.run(["python3", "-c", GET, url], timeout=30)
    if proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc.stdout


def answers(machine: Node, url: str) -> bool:
    return machine.run(["python3", "-c", GET, url], timeout=30).returncode == 0


def scale_to_zero_on(machine: Node, cri: Cri) -> None:
    """A pod under the installed `zeropod` handler sleeps and wakes with its memory."""
    daemon = Daemon(machine)
    name = f"invoices-{uuid.uuid4().hex[:5]}"
    spec = ContainerSpec("web-1", "counter")
    pod_annotations = annotations(scaledown_duration="10m")
    with cri.pod(
        name, [spec], namespace="finance", annotations=pod_annotations, **kubelet_pod()
    ) as running:
        cid = running.containers["web-1"]
        daemon.wait_state(cid, "RUNNING")
        url = http.url(cri.pod_ip(running.pod), APP_PORT)
        wait_for(lambda: answers(machine, url), 30, what="the pod answers")
        assert get(machine, url) == "count=2\n"
        daemon.sleep(name, "finance")
        asleep = daemon.container(cid)
        assert asleep["state"] == "SCALED_DOWN"
        # A request from the node (kubelet's place, not a probe) wakes it, relayed.
        assert get(machine, url) == "count=3\n"
        info = daemon.wait_state(cid, "RUNNING")
        assert info["cold_starts"] == 0 and info["restore_errors"] == 0
        # In its pod's slice, like every pod of a kubeadm node (systemd cgroup driver).
        cgroup = machine.run(["cat", f"/proc/{info['pid']}/cgroup"], check=True).stdout
        assert f"cri-containerd-{cid}.scope" in cgroup


INSTALLER = "localhost/zeropod/installer:"


def run_to_completion(cri: Cri, pod, name: str, image: str, command: list[str]) -> str:
    """Create and start a privileged container with the node's root at /host (the
    DaemonSet's init container), wait until it exits 0; its log. containerd restarts while
    it runs (the installer changes its config): the CRI calls ride that out."""
    spec = ContainerSpec(name, image, command=command, privileged=True, mounts=[("/", "/host")])
    cid = cri.create_container(
        pod, spec.name, spec.image, command=spec.command, privileged=True, mounts=spec.mounts
    )
    cri.start_container(cid)

    def exited():
        try:
            status = cri.container_status(cid)
        except CriError:
            return None  # containerd is restarting
        return status if status.state == api.CONTAINER_EXITED else None

    status = wait_for(exited, 180, interval=0.5, what=f"{name} to finish")
    log = cri.node_root / cri.log_file(cid).lstrip("/") if cri.node_root else None
    text = log.read_text() if log and log.exists() else ""
    assert status.exit_code == 0, text[-3000:]
    return text


def test_the_installer_image_installs_as_a_privileged_pod_and_uninstalls(machine: Node) -> None:
    config = machine.root / "etc/containerd/config.toml"
    original = config.read_bytes()
    archive = Path(os.environ.get("ZEROPOD_IMAGES") or REPO / "build" / "images") / "installer.tar"
    with open(archive, "rb") as f:
        imported = subprocess.run(
            [str(REPO / "node" / "run"), "ctr", "-n", "k8s.io", "images", "import", "-"],
            stdin=f,
            capture_output=True,
            text=True,
            env={**os.environ, **dict(machine.env)},
        )
    assert imported.returncode == 0, imported.stderr
    version = (REPO / "dist").glob("zeropod-*-x86_64.tar.gz").__next__().name.split("-")[1]
    image = INSTALLER + version
    with (
        Cri.for_node(machine) as cri,
        cri.pod(
            f"ledger-{uuid.uuid4().hex[:5]}",
            [ContainerSpec("api-1", "counter")],
            namespace="finance",
            runtime_handler="runc",
            **kubelet_pod(),
        ) as bystander,
    ):
        runc_pid = cri.task_pid(bystander.containers["api-1"])
        installer = cri.run_pod(
            f"zeropod-installer-{uuid.uuid4().hex[:5]}",
            "zeropod-system",
            "runc",
            privileged=True,
            host_pid=True,  # as the DaemonSet's hostPID: true
            **kubelet_pod(),
        )
        try:
            log = run_to_completion(
                cri,
                installer,
                "install",
                image,
                ["zeropod", "install", "--host-root", "/host"],
            )
            assert "done: systemctl restart containerd.service" in log
            scale_to_zero_on(machine, cri)
            log = run_to_completion(
                cri,
                installer,
                "uninstall",
                image,
                ["zeropod", "install", "--host-root", "/host", "--uninstall"],
            )
            assert "done: remove /opt/zeropod" in log
        finally:
            wait_for(lambda: _cleaned(cri, installer), 120, interval=1, what="pod removed")
        assert config.read_bytes() == original
        assert leftovers(machine) == []
        assert not list((machine.root / "var/tmp").glob("zeropod-package.*"))
        assert cri.task_pid(bystander.containers["api-1"]) == runc_pid


def _cleaned(cri: Cri, pod) -> bool:
    try:
        return not cri.cleanup(pod, [c.id for c in cri.list_containers(pod)])
    except CriError:
        return False  # containerd is restarting
