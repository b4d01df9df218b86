"""Which ``criu`` runc runs for zeropod's containers, and which of zeropod's options it has.

zeropod's CRIU build (``scripts/setup-host``, ``scripts/criu-patches/``) adds three options, off
unless a config file asks for them, so any other user of the same binary (a plain ``runc
checkpoint``) gets upstream's behaviour:

- ``freeze-poll-fast``: upstream freezes the cgroup, sees it FREEZING and sleeps a whole
  100 ms step before it looks again, so every dump spent ~101 ms (``freezing_time``) waiting
  for a freeze that takes about one. With the option CRIU reads the freezer's state after
  1 ms, then after twice as long each time within the step.
- ``tmpfs-no-gzip``: the tmpfs mounts of a container (runc's ``/dev``, ``/sys/fs/cgroup``:
  a few hundred bytes of names) are dumped as plain tarballs. Upstream pipes them through
  gzip, a second exec (~1.4 ms) per mount at every dump and every restore. The restore
  reads either kind (gzip's magic decides), so images from before the option still restore.
- ``tmpfs-untar-inline``: the restore extracts such a plain tarball in CRIU itself, no
  ``tar`` exec (1-2 ms per mount). Only what ``tar`` writes for a small tree (directories,
  files, links, device nodes, FIFOs with short names); a tarball with anything else (long
  names, sparse files, a name leaving the mount) is seen before anything is written and
  goes to ``tar`` as upstream.

A binary without them (a node's own CRIU 4.2 from elsewhere) would refuse an unknown option,
and every dump with it, so :func:`zeropod_options` reads the binary for the options' names
(once per binary: cached by path, size and mtime) and gives only those it has.
"""

from __future__ import annotations

import functools
import mmap
import os
import shutil

from zeropod.shim.paths import CRIU_DIR

ZEROPOD_OPTIONS = ("freeze-poll-fast", "tmpfs-no-gzip", "tmpfs-untar-inline")


def find_criu(criu_dir: str = CRIU_DIR) -> str:
    """The ``criu`` runc runs: zeropod's own when installed (first on the runc shim's PATH,
    not on ours), else the first on PATH; FileNotFoundError naming the search path."""
    search = os.pathsep.join(p for p in (criu_dir, os.environ.get("PATH", "")) if p)
    path = shutil.which("criu", path=search)
    if path is None:
        raise FileNotFoundError(f"criu not found in {search}")
    return path


def zeropod_options(criu_dir: str = CRIU_DIR) -> tuple[str, ...]:
    """The options of :data:`ZEROPOD_OPTIONS` that the ``criu`` runc runs has (none when
    there is no criu to read: its dump would fail anyway, and say why)."""
    try:
        path = find_criu(criu_dir)
        st = os.stat(path)
        return _options_in(path, st.st_size, st.st_mtime_ns)
    except OSError:
        return ()


@functools.lru_cache(maxsize=4)
def _options_in(path: str, size: int, mtime_ns: int) -> tuple[str, ...]:
    """The options whose names the binary at PATH holds (SIZE and MTIME_NS: the cache key)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return tuple(o for o in ZEROPOD_OPTIONS if data.find(o.encode() + b"\0") >= 0)
