"""Starting the shim's long-lived Python processes (the interposer, its template) detached
from ``start``, and reading the word they send back on their ready pipe.

Both run this package's code with the interpreter ``start`` runs on, in a session of their
own, from ``/``, with stdin and stdout on /dev/null and stderr on a log file.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Sequence
from typing import BinaryIO

WITHOUT_SSL = (
    # asyncio imports ssl when it can, and OpenSSL's initialisation alone costs a sleeping
    # pod ~3.5 MB PSS (measured on Debian 12); the shim speaks ttrpc over unix sockets
    # only, so its processes run without ssl.
    "import sys; sys.modules['ssl'] = None; "
)


def spawn(
    code: str, args: Sequence[str], pass_fds: Sequence[int], stderr: BinaryIO, pkg_root: str
) -> None:
    """``python3 -c CODE ARGS...`` with PKG_ROOT first on its path, detached."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        cwd="/",
        env=env,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
    )


def read_word(fd: int, timeout: float) -> str | None:
    """What a child wrote on its ready pipe FD: None if nothing within TIMEOUT seconds, ""
    if every write end was closed without a word."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return None
    return os.read(fd, 4096).decode(errors="replace").strip()
