"""zeropod's CRIU dumps a process of another uid on these machines (no CAP_SYS_RESOURCE).

Stock CRIU 4.2.1 reads each task's rlimits with prlimit64, which needs CAP_SYS_RESOURCE for
another uid's process: `Can't get rlimit 0: Operation not permitted`, and no non-root pod
could sleep here. The rlimits patch (scripts/criu-patches) reads /proc/PID/limits instead when
prlimit64 answers EPERM. Checked with the host's build of it, without the node: the dump
succeeds and the image holds the limits the process really has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("ZEROPOD_CACHE", "/var/cache/zeropod"))
CRIU = CACHE / "criu-4.2.1" / "criu" / "criu"
PYCRIU = CACHE / "criu-4.2.1" / "lib"
DECODE = "import json, sys, pycriu; print(json.dumps(pycriu.images.load(open(sys.argv[1], 'rb'))))"


def test_a_uid_65534_process_is_dumped_with_its_limits(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (criu dump)")
    if not CRIU.exists():
        pytest.skip(f"no CRIU build at {CRIU} (make setup)")
    tmp_path.chmod(0o755)
    proc = subprocess.Popen(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "sh",
            "-c",
            "ulimit -n 777; exec sleep 300",
        ],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        limits = Path(f"/proc/{proc.pid}/limits")
        for _ in range(100):
            if "777" in limits.read_text():
                break
            subprocess.run(["sleep", "0.02"])
        images = tmp_path / "images"
        images.mkdir()
        dump = subprocess.run(
            [
                str(CRIU),
                "dump",
                "-t",
                str(proc.pid),
                "-D",
                str(images),
                "-o",
                "dump.log",
                "--shell-job",
                "--leave-running",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        log = (images / "dump.log").read_text()
        assert dump.returncode == 0, log[-2000:]
        assert "Can't get rlimit" not in log
        core = next(images.glob("core-*.img"))
        decoded = subprocess.run(
            [
                sys.executable,
                "-c",
                DECODE,
                str(core),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(PYCRIU)},
        )
        if decoded.returncode != 0:
            pytest.skip(f"pycriu unavailable on the host: {decoded.stderr[-300:]}")
        rlimits = json.loads(decoded.stdout)["entries"][0]["tc"]["rlimits"]["rlimits"]
        assert int(rlimits[7]["cur"]) == 777 and int(rlimits[7]["max"]) == 777  # RLIMIT_NOFILE
    finally:
        proc.kill()
        proc.wait()
