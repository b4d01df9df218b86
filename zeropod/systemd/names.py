"""Unit names for a pod: systemd's string escaping and the `<namespace>_<pod>` instance scheme.

A pod's units are `zeropod@<instance>.socket` and `zeropod@<instance>.service` with
instance = systemd_escape("<namespace>_<pod>"). Kubernetes names never contain "_", so the
first "_" separates namespace and pod unambiguously; "-" becomes "\\x2d" as in
`systemd-escape`:

    instance_name("kube-system", "coredns-5d78c")   # 'kube\\x2dsystem_coredns\\x2d5d78c'
    unit_name("zeropod", instance, "socket")        # 'zeropod@kube\\x2dsystem_....socket'

Unit names are at most 255 characters. When the escaped instance would not fit, it is cut and
ends in "_" plus 16 hex digits of the SHA-256 of "<namespace>_<pod>", so it stays predictable
and distinct; `pod_of_instance` then cannot recover the names (it returns None).
"""

from __future__ import annotations

import hashlib
import re
import string

UNIT_NAME_MAX = 255
_PLAIN = frozenset(string.ascii_letters + string.digits + ":_.")
_UNIT_TYPES = frozenset(
    {"service", "socket", "target", "device", "mount", "automount", "swap", "timer", "path"}
    | {"slice", "scope"}
)
# The characters systemd allows in a unit name's prefix and instance.
_UNIT_CHARS = re.compile(r"^[A-Za-z0-9:_.\\-]+$")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def systemd_escape(text: str) -> str:
    """`systemd-escape TEXT`: "/" -> "-", a leading "." and every byte outside
    [A-Za-z0-9:_.] -> "\\xNN" (UTF-8 bytes)."""
    out = []
    for i, ch in enumerate(text):
        if ch == "/":
            out.append("-")
        elif ch in _PLAIN and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


def systemd_unescape(text: str) -> str:
    """`systemd-escape --unescape TEXT`: the inverse of systemd_escape."""
    raw = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        raw += text[pos : match.start()].replace("-", "/").encode()
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += text[pos:].replace("-", "/").encode()
    return raw.decode()


def unit_name(prefix: str, instance: str, unit_type: str) -> str:
    """ "PREFIX@INSTANCE.TYPE"; raises ValueError when it is not a valid unit name."""
    name = f"{prefix}@{instance}.{unit_type}"
    if unit_type not in _UNIT_TYPES:
        raise ValueError(f"unit type {unit_type!r}: expected one of {sorted(_UNIT_TYPES)}")
    if not _UNIT_CHARS.match(prefix) or not _UNIT_CHARS.match(instance):
        raise ValueError(f"{name!r}: prefix and instance must be non-empty and escaped")
    if len(name) > UNIT_NAME_MAX:
        raise ValueError(f"{name!r}: longer than {UNIT_NAME_MAX} characters")
    return name


def instance_name(namespace: str, pod: str, prefix: str = "zeropod") -> str:
    """The escaped instance "<namespace>_<pod>" for units named PREFIX@<instance>.<type>.

    Raises ValueError for an empty namespace or pod, or one containing "_" (not a Kubernetes
    name, and it would make the scheme ambiguous).
    """
    for what, value in (("namespace", namespace), ("pod", pod)):
        if not value or "_" in value:
            raise ValueError(f"{what} {value!r}: expected a non-empty Kubernetes name (no '_')")
    raw = f"{namespace}_{pod}"
    escaped = systemd_escape(raw)
    # Room for "PREFIX@" and the longest suffix we use (".service").
    room = UNIT_NAME_MAX - len(prefix) - 1 - len(".service")
    if len(escaped) <= room:
        return escaped
    digest = hashlib.sha256(raw.encode()).hexdigest()[:16]
    head = escaped[: room - len(digest) - 1]
    head = re.sub(r"\\(x[0-9a-f]?)?$", "", head)  # never cut an escape sequence in half
    return f"{head}_{digest}"


def pod_of_instance(instance: str) -> tuple[str, str] | None:
    """(namespace, pod) of an instance made by instance_name, or None for a shortened one."""
    raw = systemd_unescape(instance)
    namespace, sep, pod = raw.partition("_")
    if not sep or not namespace or not pod or "_" in pod:
        return None
    return namespace, pod
