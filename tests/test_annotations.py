"""Table-driven tests for the zeropod.ctrox.dev/* annotation parser."""

import pytest

from zeropod.config.annotations import (
    CONTAINER_NAMES,
    DISABLE_CHECKPOINTING,
    PORTS_MAP,
    SCALEDOWN_DURATION,
    AnnotationError,
    ScalingConfig,
    parse_annotations,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("30s", 30.0),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),  # Go's micro sign
        ("100ns", 1e-7),
        (" 10s ", 10.0),
        (".5s", 0.5),
        ("0s", 0.0),
    ],
)
def test_scaledown_duration_good(value: str, seconds: float) -> None:
    config = parse_annotations({SCALEDOWN_DURATION: value})
    assert config.scaledown_seconds == pytest.approx(seconds)
    assert config.scales_on_idle == (seconds > 0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (SCALEDOWN_DURATION, ""),
        (SCALEDOWN_DURATION, "30"),
        (SCALEDOWN_DURATION, "-1m"),
        (SCALEDOWN_DURATION, "+1m"),
        (SCALEDOWN_DURATION, "1d"),
        (SCALEDOWN_DURATION, "1 m"),
        (SCALEDOWN_DURATION, "m"),
        (SCALEDOWN_DURATION, "1m30"),
        (SCALEDOWN_DURATION, "abc"),
        (CONTAINER_NAMES, "App"),
        (CONTAINER_NAMES, "c1;c2"),
        (CONTAINER_NAMES, "c1,-bad"),
        (CONTAINER_NAMES, "a" * 64),
        (PORTS_MAP, "c1"),
        (PORTS_MAP, "c1=80;c1=81"),
        (PORTS_MAP, "c1="),
        (PORTS_MAP, "c1=80,"),
        (PORTS_MAP, "c1=0"),
        (PORTS_MAP, "c1=65536"),
        (PORTS_MAP, "c1=http"),
        (PORTS_MAP, "c1=-80"),
        (PORTS_MAP, "=80"),
        (PORTS_MAP, "C1=80"),
        (DISABLE_CHECKPOINTING, "yes"),
        (DISABLE_CHECKPOINTING, ""),
        (DISABLE_CHECKPOINTING, "tru"),
    ],
)
def test_bad_values_name_key_value_and_allowed(key: str, value: str) -> None:
    with pytest.raises(AnnotationError) as info:
        parse_annotations({key: value})
    err = info.value
    assert err.key == key
    assert err.value == value
    assert key in str(err)
    assert repr(value) in str(err)
    assert "allowed:" in str(err)


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("app", frozenset({"app"})),
        ("app,sidecar", frozenset({"app", "sidecar"})),
        (" app , sidecar ", frozenset({"app", "sidecar"})),
        ("app,", frozenset({"app"})),
        ("", None),
        ("a" * 63, frozenset({"a" * 63})),
    ],
)
def test_container_names_good(value: str, names: frozenset[str] | None) -> None:
    assert parse_annotations({CONTAINER_NAMES: value}).container_names == names


@pytest.mark.parametrize(
    ("value", "ports_map"),
    [
        ("c1=80,81;c2=8080", (("c1", (80, 81)), ("c2", (8080,)))),
        ("c1=80", (("c1", (80,)),)),
        (" c1 = 80 , 81 ; ", (("c1", (80, 81)),)),
        ("c1=1,65535", (("c1", (1, 65535)),)),
        ("c1=80,80", (("c1", (80,)),)),
        ("", ()),
    ],
)
def test_ports_map_good(value: str, ports_map: tuple) -> None:
    assert parse_annotations({PORTS_MAP: value}).ports_map == ports_map


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("false", False), ("True", True), ("FALSE", False), ("1", True), ("0", False)],
)
def test_disable_checkpointing_good(value: str, expected: bool) -> None:
    assert parse_annotations({DISABLE_CHECKPOINTING: value}).disable_checkpointing is expected


def test_defaults_and_unrelated_keys() -> None:
    config = parse_annotations({"other/key": "x", "zeropod.ctrox.dev/unknown": "y"})
    assert config == ScalingConfig()
    assert config.scaledown_seconds == 60.0
    assert config.scales_on_idle
    assert config.applies_to("anything")
    assert config.ports_for("anything") == ()
    assert not config.disable_checkpointing


def test_config_helpers() -> None:
    config = parse_annotations(
        {CONTAINER_NAMES: "web", PORTS_MAP: "web=80,443", SCALEDOWN_DURATION: "0"}
    )
    assert config.applies_to("web")
    assert not config.applies_to("sidecar")
    assert config.ports_for("web") == (80, 443)
    assert config.ports_for("sidecar") == ()
    assert not config.scales_on_idle


def test_config_is_frozen() -> None:
    config = ScalingConfig()
    with pytest.raises(AttributeError):
        config.scaledown_seconds = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("annotations", "detection_off", "buffer"),
    [
        ({}, False, 1024),
        ({"zeropod.ctrox.dev/disable-probe-detection": "true"}, True, 1024),
        ({"zeropod.ctrox.dev/disable-probe-detection": "0"}, False, 1024),
        ({"zeropod.ctrox.dev/probe-buffer-size": "64"}, False, 64),
        ({"zeropod.ctrox.dev/probe-buffer-size": " 65536 "}, False, 65536),
    ],
)
def test_probe_settings(annotations: dict[str, str], detection_off: bool, buffer: int) -> None:
    config = parse_annotations(annotations)
    assert (config.disable_probe_detection, config.probe_buffer_size) == (detection_off, buffer)


def test_lazy_restore_is_on_unless_a_pod_opts_out() -> None:
    assert parse_annotations({}).disable_lazy_restore is False
    key = "zeropod.ctrox.dev/disable-lazy-restore"
    assert parse_annotations({key: "true"}).disable_lazy_restore is True
    with pytest.raises(AnnotationError) as info:
        parse_annotations({key: "sometimes"})
    assert key in str(info.value) and "true or false" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("zeropod.ctrox.dev/disable-probe-detection", "yes", "not a boolean"),
        ("zeropod.ctrox.dev/probe-buffer-size", "1k", "not a whole number of bytes"),
        ("zeropod.ctrox.dev/probe-buffer-size", "-5", "not a whole number of bytes"),
        ("zeropod.ctrox.dev/probe-buffer-size", "63", "63 is out of range"),
        ("zeropod.ctrox.dev/probe-buffer-size", "65537", "65537 is out of range"),
    ],
)
def test_probe_settings_bad(key: str, value: str, problem: str) -> None:
    with pytest.raises(AnnotationError) as info:
        parse_annotations({key: value})
    message = str(info.value)
    assert key in message and repr(value) in message and problem in message
    assert "allowed:" in message
