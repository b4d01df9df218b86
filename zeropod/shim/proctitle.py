"""What ``ps`` shows for a forked interposer.

A child forked from the interposer template keeps the template's command line, and every
interposer would look the same in ``ps``. Operators (and the bench) find a pod's interposer
by its container id there. Changing the kernel's pointers to the argument area takes
CAP_SYS_RESOURCE; writing into the area itself does not: a process may write its own memory
through ``/proc/self/mem``. The template starts with a padded argument (``PADDING``) so that
the area holds any title; the title is written NUL-terminated and NUL-padded to the end, so
the kernel reads exactly it.
"""

from __future__ import annotations

import contextlib

PADDING = "zeropod.shim.template" + " " * 480
"""The template's last argument: room for a title (ids are 64 characters each)."""
PR_SET_NAME = 15


def argument_area() -> tuple[int, int]:
    """[start, end) of this process's command line in its memory (from /proc/self/stat)."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    # After the comm, field 3 is index 0: arg_start and arg_end are fields 48 and 49.
    return int(fields[45]), int(fields[46])


def set_title(title: str, comm: str = "zeropod-shim") -> bool:
    """Make ``ps`` show TITLE (cut to the area) and ``top`` show COMM; False if it could not."""
    import ctypes  # here: ``start`` imports this module for PADDING only
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_NAME, comm.encode()[:15], 0, 0, 0)
    try:
        start, end = argument_area()
        size = end - start
        if size <= 1:
            return False
        data = title.encode(errors="replace")[: size - 1]
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(data + b"\0" * (size - len(data)))
    except (OSError, ValueError, IndexError):
        return False
    return True
