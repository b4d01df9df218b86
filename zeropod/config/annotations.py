"""Parse the upstream-compatible ``zeropod.ctrox.dev/*`` annotations into a frozen config.

This is the only place that validates annotation values. A bad value raises
:class:`AnnotationError`, whose message names the annotation key, the bad value and what
is allowed; the caller decides what to do (the daemon runs such a pod unscaled).
Annotations with other prefixes and unknown ``zeropod.ctrox.dev/`` keys are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

PREFIX = "zeropod.ctrox.dev/"
SCALEDOWN_DURATION = PREFIX + "scaledown-duration"
CONTAINER_NAMES = PREFIX + "container-names"
PORTS_MAP = PREFIX + "ports-map"
DISABLE_CHECKPOINTING = PREFIX + "disable-checkpointing"
DISABLE_PROBE_DETECTION = PREFIX + "disable-probe-detection"
PROBE_BUFFER_SIZE = PREFIX + "probe-buffer-size"
DISABLE_LAZY_RESTORE = PREFIX + "disable-lazy-restore"

DEFAULT_SCALEDOWN_SECONDS = 60.0
DEFAULT_PROBE_BUFFER_SIZE = 1024
"""Bytes of an accepted node connection read to find kubelet's ``User-Agent`` (upstream's)."""
PROBE_BUFFER_RANGE = (64, 65536)

# Kubernetes container names are DNS-1123 labels.
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DURATION_PART_RE = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts both micro signs
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Go's strconv.ParseBool, which upstream zeropod uses for boolean annotations.
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})

_ALLOWED_DURATION = (
    "a Go duration such as 30s, 1m, 1m30s, 500ms or 1h (units ns, us, ms, s, m, h), or 0 for never"
)
_ALLOWED_NAMES = "comma-separated container names (DNS-1123 labels), e.g. app,sidecar"
_ALLOWED_PORTS = "container=port[,port...] separated by ';', ports 1-65535, e.g. c1=80,81;c2=8080"
_ALLOWED_BOOL = "true or false"
_ALLOWED_BUFFER = (
    f"a whole number of bytes from {PROBE_BUFFER_RANGE[0]} to {PROBE_BUFFER_RANGE[1]}, e.g. 1024"
)


class AnnotationError(ValueError):
    """An annotation value that cannot be used; names the key, the value and what is allowed."""

    def __init__(self, key: str, value: str, problem: str, allowed: str) -> None:
        self.key = key
        self.value = value
        self.problem = problem
        self.allowed = allowed
        super().__init__(f"annotation {key}={value!r}: {problem}; allowed: {allowed}")


@dataclass(frozen=True)
class ScalingConfig:
    """How a pod's containers scale to zero, as its annotations ask.

    ``scaledown_seconds`` of 0 means never scale down on idle. ``container_names`` of
    ``None`` means every container of the pod scales. ``ports_map`` pairs container names
    with the ports to watch; a container without an entry has its ports auto-detected.
    """

    scaledown_seconds: float = DEFAULT_SCALEDOWN_SECONDS
    container_names: frozenset[str] | None = None
    ports_map: tuple[tuple[str, tuple[int, ...]], ...] = ()
    disable_checkpointing: bool = False
    disable_probe_detection: bool = False
    """True: connections from the node are not told apart as kubelet's probes; they count
    as activity and wake a sleeping pod like any other client."""
    probe_buffer_size: int = DEFAULT_PROBE_BUFFER_SIZE
    """Bytes read from a node connection to find the end of its HTTP request's headers."""
    disable_lazy_restore: bool = False
    """True: a wake copies all memory before the app runs (no ``criu lazy-pages``)."""

    @property
    def scales_on_idle(self) -> bool:
        """True when idle containers are put to sleep (the duration is not 0)."""
        return self.scaledown_seconds > 0

    def applies_to(self, container_name: str) -> bool:
        """True when ``container_name`` is one of the containers this config scales."""
        return self.container_names is None or container_name in self.container_names

    def ports_for(self, container_name: str) -> tuple[int, ...]:
        """The ports mapped to ``container_name``; empty means auto-detect."""
        for name, ports in self.ports_map:
            if name == container_name:
                return ports
        return ()


def parse_annotations(annotations: Mapping[str, str]) -> ScalingConfig:
    """Build a :class:`ScalingConfig` from a pod's or container's annotations.

    Raises :class:`AnnotationError` for the first bad value found (keys in a fixed order).
    """
    config = ScalingConfig()
    if (value := annotations.get(SCALEDOWN_DURATION)) is not None:
        config = replace(config, scaledown_seconds=parse_duration(SCALEDOWN_DURATION, value))
    if (value := annotations.get(CONTAINER_NAMES)) is not None:
        config = replace(config, container_names=parse_container_names(CONTAINER_NAMES, value))
    if (value := annotations.get(PORTS_MAP)) is not None:
        config = replace(config, ports_map=parse_ports_map(PORTS_MAP, value))
    if (value := annotations.get(DISABLE_CHECKPOINTING)) is not None:
        config = replace(config, disable_checkpointing=parse_bool(DISABLE_CHECKPOINTING, value))
    if (value := annotations.get(DISABLE_PROBE_DETECTION)) is not None:
        disabled = parse_bool(DISABLE_PROBE_DETECTION, value)
        config = replace(config, disable_probe_detection=disabled)
    if (value := annotations.get(PROBE_BUFFER_SIZE)) is not None:
        config = replace(config, probe_buffer_size=parse_buffer_size(PROBE_BUFFER_SIZE, value))
    if (value := annotations.get(DISABLE_LAZY_RESTORE)) is not None:
        disabled = parse_bool(DISABLE_LAZY_RESTORE, value)
        config = replace(config, disable_lazy_restore=disabled)
    return config


def parse_buffer_size(key: str, value: str) -> int:
    """Parse a byte count within :data:`PROBE_BUFFER_RANGE`."""
    text = value.strip()
    if not text.isdigit():
        raise AnnotationError(key, value, "not a whole number of bytes", _ALLOWED_BUFFER)
    size = int(text)
    low, high = PROBE_BUFFER_RANGE
    if not low <= size <= high:
        raise AnnotationError(key, value, f"{size} is out of range", _ALLOWED_BUFFER)
    return size


def parse_duration(key: str, value: str) -> float:
    """Parse a non-negative Go-style duration (``1m30s``, ``500ms``, ``0``) into seconds."""
    text = value.strip()
    if text == "0":
        return 0.0
    if not text:
        raise AnnotationError(key, value, "empty duration", _ALLOWED_DURATION)
    if text[0] in "+-":
        raise AnnotationError(key, value, "a duration cannot carry a sign", _ALLOWED_DURATION)
    seconds = 0.0
    pos = 0
    while pos < len(text):
        match = _DURATION_PART_RE.match(text, pos)
        if match is None:
            problem = f"cannot read {text[pos:]!r} as a number with a unit"
            raise AnnotationError(key, value, problem, _ALLOWED_DURATION)
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return seconds


def parse_container_names(key: str, value: str) -> frozenset[str] | None:
    """Parse a comma-separated list of container names; an empty list means all."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    for name in names:
        if not _NAME_RE.fullmatch(name):
            raise AnnotationError(key, value, f"{name!r} is not a container name", _ALLOWED_NAMES)
    return frozenset(names) if names else None


def parse_ports_map(key: str, value: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Parse ``c1=80,81;c2=8080`` into ``(("c1", (80, 81)), ("c2", (8080,)))``."""
    entries: list[tuple[str, tuple[int, ...]]] = []
    seen: set[str] = set()
    for entry in value.split(";"):
        if not entry.strip():
            continue
        name, sep, port_list = entry.partition("=")
        name = name.strip()
        if not sep:
            problem = f"entry {entry.strip()!r} has no '='"
            raise AnnotationError(key, value, problem, _ALLOWED_PORTS)
        if not _NAME_RE.fullmatch(name):
            problem = f"{name!r} is not a container name"
            raise AnnotationError(key, value, problem, _ALLOWED_PORTS)
        if name in seen:
            raise AnnotationError(key, value, f"container {name!r} appears twice", _ALLOWED_PORTS)
        seen.add(name)
        entries.append((name, _parse_ports(key, value, name, port_list)))
    return tuple(entries)


def _parse_ports(key: str, value: str, name: str, port_list: str) -> tuple[int, ...]:
    ports: list[int] = []
    for part in port_list.split(","):
        text = part.strip()
        if not text:
            raise AnnotationError(key, value, f"empty port for {name!r}", _ALLOWED_PORTS)
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise AnnotationError(key, value, f"{text!r} is not a port", _ALLOWED_PORTS)
        port = int(text)
        if port not in ports:
            ports.append(port)
    return tuple(ports)


def parse_bool(key: str, value: str) -> bool:
    """Parse a boolean the way Go's strconv.ParseBool does (``true``, ``false``, ``1``, ...)."""
    text = value.strip()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise AnnotationError(key, value, "not a boolean", _ALLOWED_BOOL)
