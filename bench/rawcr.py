#!/usr/bin/env python3
"""Raw CRIU through plain runc inside the test node: the baseline zeropod is measured against.

Runs in the node (python3 stdlib, plus pycriu for CRIU's stats files), outside containerd: a
bundle made from a test image's rootfs (the OCI archive in build/images), its own network
namespace per container (named like it, loopback only; the client joins it with setns), a
runc root of its own. Every command prints one JSON object.

    rawcr.py cycle --image memhog --env MEM_MB=100 --slot 0   # start if needed, checkpoint,
                                                               # restore until answered
    rawcr.py clients --slot 0 --clients 50     # checkpoint, then 50 clients during the restore
    rawcr.py storm --slots 10                  # checkpoint SLOTS containers, restore all at once
    rawcr.py wakeall --netns NS URL...         # one GET to each URL at the same moment
    rawcr.py stats DIR                         # CRIU's stats-dump / stats-restore in DIR
    rawcr.py cleanup                           # delete every bench container and netns
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import gzip
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
from pathlib import Path

ARCHIVES = Path("/opt/zeropod/src/build/images")
WORK = Path("/var/lib/zeropod-bench")
RUNC_ROOT = "/run/zeropod-bench/runc"
PORT = 8080
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
CLONE_NEWNET = 0x40000000


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


def runc(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["runc", "--root", RUNC_ROOT, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"runc {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def rootfs(image: str) -> Path:
    """The image's single layer, unpacked once under WORK/rootfs/IMAGE."""
    dest = WORK / "rootfs" / image
    stamp = dest / ".unpacked"
    archive = ARCHIVES / f"{image}.tar"
    key = str(archive.stat().st_mtime_ns)
    if stamp.exists() and stamp.read_text() == key:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))
        digest = index["manifests"][0]["digest"].split(":", 1)[1]
        manifest = json.load(outer.extractfile(f"blobs/sha256/{digest}"))
        layer = manifest["layers"][0]["digest"].split(":", 1)[1]
        data = gzip.decompress(outer.extractfile(f"blobs/sha256/{layer}").read())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest)
    stamp.write_text(key)
    return dest


def netns(cid: str) -> str:
    """The network namespace of container CID (named like it), loopback up."""
    name = cid
    if not Path(f"/run/netns/{name}").exists():
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
    return name


def enter_netns(name: str) -> None:
    """Move this (single-threaded) process into netns NAME: sockets made after it live there."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


SERVER_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def bundle(
    cid: str, image: str, env: list[str], command: list[str] | None = None, uid: int = 0
) -> Path:
    """A runc bundle for CID: the image's rootfs, runc's default spec, a netns of its own.

    With COMMAND (a real server) the rootfs is a writable copy of the image's, made afresh
    for each container (servers write their data and pid files), run as UID.
    """
    path = WORK / "bundles" / cid
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    sh("runc", "spec", "--bundle", str(path))
    spec = json.loads((path / "config.json").read_text())
    if command:
        root = path / "rootfs"
        sh("cp", "-a", "--reflink=auto", str(rootfs(image)), str(root))
        spec["root"] = {"path": str(root), "readonly": False}
        args, env = command, [SERVER_PATH, *env]
        spec["process"]["user"] = {"uid": uid, "gid": uid}
        caps = ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER")
        for kind in ("bounding", "effective", "permitted"):
            spec["process"]["capabilities"][kind] += list(caps)  # what containerd grants
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/dev/shm"]
        spec["mounts"].append(
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid"]}
        )
    else:
        spec["root"] = {"path": str(rootfs(image)), "readonly": True}
        args, env = [f"/{image}"], ["PATH=/bin", *env]
    spec["process"].update(terminal=False, args=args, env=env)
    for ns in spec["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = f"/run/netns/{netns(cid)}"
    (path / "config.json").write_text(json.dumps(spec))
    return path


# While CRIU restores, it locks the netns's network: a SYN sent then is dropped and TCP would
# resend it only after 1 s. Polling connects therefore give up after CONNECT_TIMEOUT and retry.
CONNECT_TIMEOUT = 0.005


class Hello:
    """What a client sends first and the start of the answer it waits for (a server's own
    protocol: HTTP GET by default; Redis PING, PostgreSQL's SSLRequest, ...)."""

    def __init__(self, port: int = PORT, send: bytes = REQUEST, expect: bytes = b"") -> None:
        self.port, self.send, self.expect = port, send, expect

    @property
    def http(self) -> bool:
        return self.send == REQUEST

    def ask(
        self,
        host: str,
        timeout: float,
        connect_timeout: float | None = None,
        first_byte: list[float] | None = None,
    ) -> str:
        """One exchange with HOST; the HTTP body, or the raw answer. Raises OSError. The
        monotonic time the answer's first byte came is appended to FIRST_BYTE if given."""
        with socket.create_connection((host, self.port), connect_timeout or timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(self.send)
            data = b""
            while chunk := sock.recv(65536):
                if not data and first_byte is not None:
                    first_byte.append(time.monotonic())
                data += chunk
                if not self.http and data.startswith(self.expect):
                    return data.decode(errors="replace")
        if not self.http:
            raise OSError(f"unexpected reply {data[:80]!r}")
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise OSError(f"unexpected reply {data[:80]!r}")
        return body.decode()


HELLO = Hello()
"""The one in force for this run (``--port``, ``--send``, ``--expect``)."""


def ask(timeout: float = 30.0, connect_timeout: float | None = None) -> str:
    """One exchange on 127.0.0.1 of this netns; the answer. Raises OSError on failure."""
    return HELLO.ask("127.0.0.1", timeout, connect_timeout)


def until_answered(deadline: float) -> float:
    """Poll GET / (refused while nothing listens) until answered; the monotonic time of it."""
    while True:
        try:
            ask(timeout=max(0.1, deadline - time.monotonic()), connect_timeout=CONNECT_TIMEOUT)
            return time.monotonic()
        except OSError as err:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer before the deadline") from err
            time.sleep(0.001)


def spawn_with_pipes(argv: list[str], cid: str) -> subprocess.Popen[bytes]:
    """Start ARGV with pipes as stdio (runc hands pipes to CRIU as external, files outside the
    container's mounts it cannot dump); a `cat` that outlives this script drains the output."""
    log = open(WORK / f"{cid}.log", "ab")  # noqa: SIM115 - handed to cat
    out_r, out_w = os.pipe()
    subprocess.Popen(
        ["cat"], stdin=out_r, stdout=log, stderr=subprocess.DEVNULL, start_new_session=True
    )
    in_r, in_w = os.pipe()
    os.close(in_w)
    try:
        return subprocess.Popen(argv, stdin=in_r, stdout=out_w, stderr=out_w)
    finally:
        for fd in (out_r, out_w, in_r):
            os.close(fd)
        log.close()


def container_status(cid: str) -> str | None:
    proc = runc("state", cid, check=False)
    return json.loads(proc.stdout)["status"] if proc.returncode == 0 else None


def ensure_running(
    cid: str, image: str, env: list[str], command: list[str] | None = None, uid: int = 0
) -> None:
    if container_status(cid) == "running":
        return
    runc("delete", "--force", cid, check=False)
    path = bundle(cid, image, env, command, uid)
    proc = spawn_with_pipes(
        ["runc", "--root", RUNC_ROOT, "run", "-d", "--bundle", str(path), cid], cid
    )
    if proc.wait(60) != 0:
        raise RuntimeError(f"runc run {cid}: exit {proc.returncode}")


def checkpoint(cid: str) -> tuple[Path, float]:
    images = WORK / "images" / cid
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    os.sync()  # the old image's blocks discarded before the measured dump (probes.quiet_disk)
    t0 = time.monotonic()
    runc("checkpoint", "--image-path", str(images), cid)
    return images, (time.monotonic() - t0) * 1000


def start_restore(cid: str, images: Path) -> subprocess.Popen[bytes]:
    path = WORK / "bundles" / cid
    argv = ["runc", "--root", RUNC_ROOT, "restore", "-d", "--image-path", str(images)]
    argv += ["--bundle", str(path), cid]
    return spawn_with_pipes(argv, cid)


def finish_restore(proc: subprocess.Popen[bytes], cid: str) -> None:
    proc.wait(60)
    if proc.returncode != 0:
        raise RuntimeError(f"runc restore {cid}: exit {proc.returncode}")


def read_stats(images: Path) -> dict[str, dict[str, int]]:
    """CRIU's dump and restore stats in IMAGES (microseconds and page counts), if present."""
    try:
        import pycriu
    except ImportError:
        return {}
    out: dict[str, dict[str, int]] = {}
    for kind in ("dump", "restore"):
        path = images / f"stats-{kind}"
        if path.exists():
            with open(path, "rb") as f:
                entry = pycriu.images.load(f)["entries"][0]
            out[kind] = dict(entry.get(kind, {}))
    return out


def container_id(image: str, env: list[str], slot: int) -> str:
    """zpb-IMAGE[-ENV VALUES]-SLOT: a container per image, settings and slot."""
    values = [e.split("=", 1)[1] for e in env]
    return "-".join(["zpb", image, *values, str(slot)])


def cmd_cycle(args: argparse.Namespace) -> dict:
    cid = container_id(args.image, args.env, args.slot)
    if args.command:
        cid = "-".join(["zpb", args.name or "server", str(args.slot)])
    ensure_running(cid, args.image, args.env, json.loads(args.command or "null"), args.uid)
    enter_netns(netns(cid))
    until_answered(time.monotonic() + 60)
    body = ask()
    images, checkpoint_ms = checkpoint(cid)
    t0 = time.monotonic()
    proc = start_restore(cid, images)
    answered = until_answered(t0 + 60)
    after = ask()
    finish_restore(proc, cid)
    restored_ms = (time.monotonic() - t0) * 1000
    return {
        "checkpoint_ms": round(checkpoint_ms, 3),
        "restore_answer_ms": round((answered - t0) * 1000, 3),
        "runc_restore_ms": round(restored_ms, 3),
        "same_state": body.split()[:2] == after.split()[:2] if HELLO.http else True,
        "criu": read_stats(images),
    }


def one_client(deadline: float) -> str:
    try:
        ask(timeout=max(0.1, deadline - time.monotonic()))
        return "answered"
    except ConnectionRefusedError:
        return "refused"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    except OSError:
        return "error"


def cmd_clients(args: argparse.Namespace) -> dict:
    """CLIENTS connect at once while a checkpointed container is being restored."""
    cid = container_id(args.image, args.env, args.slot)
    ensure_running(cid, args.image, args.env)
    enter_netns(netns(cid))
    until_answered(time.monotonic() + 60)
    images, _ = checkpoint(cid)
    proc = start_restore(cid, images)
    deadline = time.monotonic() + 30
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        outcomes = list(pool.map(lambda _: one_client(deadline), range(args.clients)))
    finish_restore(proc, cid)
    return {kind: outcomes.count(kind) for kind in ("answered", "reset", "refused", "error")}


def cmd_storm(args: argparse.Namespace) -> dict:
    """Checkpoint SLOTS containers, restore them all at once; each one's time to answer."""
    cids = [container_id(args.image, args.env, slot) for slot in range(args.slots)]
    for cid in cids:
        ensure_running(cid, args.image, args.env)
    dumps = [checkpoint(cid)[0] for cid in cids]
    # One thread per container, each in its container's netns (setns is per thread).
    libc = ctypes.CDLL(None, use_errno=True)

    def restore_one(slot: int) -> float | None:
        fd = os.open(f"/run/netns/{netns(cids[slot])}", os.O_RDONLY)
        try:
            libc.setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)
        t0 = time.monotonic()
        proc = start_restore(cids[slot], dumps[slot])
        try:
            answered = until_answered(t0 + 60)
        except TimeoutError:
            return None
        finally:
            proc.wait(60)
        return round((answered - t0) * 1000, 3)

    with concurrent.futures.ThreadPoolExecutor(args.slots) as pool:
        latencies = list(pool.map(restore_one, range(args.slots)))
    return {"latency_ms": latencies}


def first_answer(host: str, port: int, timeout: float) -> float:
    """One GET / to HOST: ms from connect to the first answer byte; raises OSError unless
    the whole answer is a 200."""
    t0, first = time.monotonic(), []
    Hello(port).ask(host, timeout, first_byte=first)
    return round((first[0] - t0) * 1000, 3)


def cmd_wakeall(args: argparse.Namespace) -> dict:
    """From netns NETNS, one GET to each URL, all at the same moment (one thread each, past
    a barrier): each one's ms from connect to first byte, or its error."""
    enter_netns(args.netns)  # before any thread: they inherit it
    targets = [urllib.parse.urlsplit(url) for url in args.urls]
    barrier = threading.Barrier(len(targets))

    def one(target: urllib.parse.SplitResult) -> float | str:
        barrier.wait()
        try:
            return first_answer(target.hostname or "", target.port or 80, args.timeout)
        except OSError as err:
            return f"{type(err).__name__}: {err}"

    with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
        outcomes = list(pool.map(one, targets))
    return {
        "latency_ms": [o if isinstance(o, float) else None for o in outcomes],
        "errors": [o for o in outcomes if isinstance(o, str)],
    }


def cmd_poll(args: argparse.Namespace) -> dict:
    """Poll URL from netns NETNS until it answers; the wall-clock time of the answer."""
    enter_netns(args.netns)
    host, _, port = args.url.split("/")[2].rpartition(":")
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT) as sock:
                sock.settimeout(5)
                sock.sendall(REQUEST)
                first = sock.recv(65536)
                if first.startswith(b"HTTP/1.1 200"):
                    return {"answered_at": time.time()}
        except OSError:
            pass
        if time.monotonic() > deadline:
            return {"answered_at": None}
        time.sleep(0.002)


def cmd_hello(args: argparse.Namespace) -> dict:
    """From netns NETNS: one exchange with HOST (the latency of connect to answer), or with
    --poll the wall-clock time it first answers (a starting server refuses meanwhile)."""
    enter_netns(args.netns)
    deadline = time.monotonic() + args.timeout
    while True:
        t0 = time.monotonic()
        try:
            HELLO.ask(
                args.host,
                timeout=max(0.1, deadline - t0),
                connect_timeout=(CONNECT_TIMEOUT if args.poll else None),
            )
            return {
                "latency_ms": round((time.monotonic() - t0) * 1000, 3),
                "answered_at": time.time(),
            }
        except OSError as err:
            if not args.poll or time.monotonic() > deadline:
                return {"error": str(err), "answered_at": None}
        time.sleep(0.002)


def cmd_stats(args: argparse.Namespace) -> dict:
    return read_stats(Path(args.dir))


def cmd_cleanup(args: argparse.Namespace) -> dict:
    removed = []
    proc = runc("list", "--format", "json", check=False)
    for c in json.loads(proc.stdout or "null") or []:
        runc("delete", "--force", c["id"], check=False)
        removed.append(c["id"])
    for ns in Path("/run/netns").glob("zpb*") if Path("/run/netns").exists() else ():
        sh("ip", "netns", "delete", ns.name, check=False)
    shutil.rmtree(WORK / "images", ignore_errors=True)
    return {"removed": removed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("cycle", "clients", "storm"):
        p = sub.add_parser(name)
        p.add_argument("--image", default="memhog")
        p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the app")
        p.add_argument("--slot", type=int, default=0)
        p.add_argument("--clients", type=int, default=50)
        p.add_argument("--slots", type=int, default=10)
        p.add_argument("--command", help="a server's argv as JSON (image: its rootfs)")
        p.add_argument("--name", help="the server's name (container ids)")
        p.add_argument("--uid", type=int, default=0, help="the server's user")
    p = sub.add_parser("hello")
    p.add_argument("host")
    p.add_argument("--netns", required=True)
    p.add_argument("--poll", action="store_true")
    p.add_argument("--timeout", type=float, default=60)
    for p in sub.choices.values():
        p.add_argument("--port", type=int, default=PORT)
        p.add_argument("--send", help="hex of the first bytes sent (default: HTTP GET /)")
        p.add_argument("--expect", default="", help="hex of the answer's start")
    sub.add_parser("stats").add_argument("dir")
    p = sub.add_parser("poll")
    p.add_argument("url")
    p.add_argument("--netns", required=True)
    p.add_argument("--timeout", type=float, default=60)
    p = sub.add_parser("wakeall")
    p.add_argument("urls", nargs="+")
    p.add_argument("--netns", required=True)
    p.add_argument("--timeout", type=float, default=120)
    sub.add_parser("cleanup")
    args = parser.parse_args(argv)
    global HELLO
    if getattr(args, "send", None):
        HELLO = Hello(args.port, bytes.fromhex(args.send), bytes.fromhex(args.expect))
    handlers = {
        "hello": cmd_hello,
        "cycle": cmd_cycle,
        "clients": cmd_clients,
        "storm": cmd_storm,
        "stats": cmd_stats,
        "poll": cmd_poll,
        "wakeall": cmd_wakeall,
        "cleanup": cmd_cleanup,
    }
    json.dump(handlers[args.cmd](args), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
