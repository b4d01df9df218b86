"""The interposer runs without ssl: OpenSSL's initialisation would cost every sleeping pod
~3.5 MB PSS, and nothing the interposer imports may need it."""

from __future__ import annotations

import os
import subprocess
import sys

from zeropod.shim.launcher import INTERPOSER_MAIN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_interposer_imports_and_runs_its_loop_without_ssl() -> None:
    check = INTERPOSER_MAIN.replace(
        "from zeropod.shim.interposer import main; main()",
        "import asyncio, zeropod.shim.interposer, zeropod.shim.scaling; "
        "asyncio.run(asyncio.sleep(0)); "
        "assert sys.modules['ssl'] is None; print('ok')",
    )
    assert check != INTERPOSER_MAIN
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
