"""Unit names for a pod: systemd's escaping (against systemd-escape's own output) and the
`<namespace>_<pod>` instance scheme."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from zeropod.systemd.names import (
    UNIT_NAME_MAX,
    instance_name,
    pod_of_instance,
    systemd_escape,
    systemd_unescape,
    unit_name,
)

# Outputs of `systemd-escape -- TEXT` from systemd 252.
KNOWN = [
    ("default_my-pod", r"default_my\x2dpod"),
    ("kube-system_coredns-5d78c9869d-abcde", r"kube\x2dsystem_coredns\x2d5d78c9869d\x2dabcde"),
    ("a.b", "a.b"),
    (".hidden", r"\x2ehidden"),
    ("with space", r"with\x20space"),
    ("x/y", "x-y"),
    ("ünï", r"\xc3\xbcn\xc3\xaf"),
    ("a:b_c", "a:b_c"),
    ("-lead", r"\x2dlead"),
    ("", ""),
    ("tab\tx", r"tab\x09x"),
    ("a\\b", r"a\x5cb"),
    ("100%", r"100\x25"),
]


@pytest.mark.parametrize(("text", "escaped"), KNOWN)
def test_escape_matches_systemd_escape(text: str, escaped: str) -> None:
    assert systemd_escape(text) == escaped


@pytest.mark.parametrize(("text", "escaped"), [k for k in KNOWN if "/" not in k[0]])
def test_unescape_inverts(text: str, escaped: str) -> None:
    assert systemd_unescape(escaped) == text


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="no systemd-escape here")
def test_escape_agrees_with_the_installed_tool() -> None:
    texts = [t for t, _ in KNOWN if t] + ["ns_pod.with.dots", "UPPER_case-9"]
    out = subprocess.run(
        ["systemd-escape", "--", *texts], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [systemd_escape(t) for t in texts]


@pytest.mark.parametrize(
    ("namespace", "pod", "instance"),
    [
        ("default", "web", "default_web"),
        ("default", "my-pod", r"default_my\x2dpod"),
        ("kube-system", "coredns-5d78c", r"kube\x2dsystem_coredns\x2d5d78c"),
        ("prod", "api.v2-0", r"prod_api.v2\x2d0"),
    ],
)
def test_instance_names(namespace: str, pod: str, instance: str) -> None:
    assert instance_name(namespace, pod) == instance
    assert pod_of_instance(instance) == (namespace, pod)
    assert unit_name("zeropod", instance, "socket") == f"zeropod@{instance}.socket"


@pytest.mark.parametrize(("namespace", "pod"), [("", "web"), ("default", ""), ("a_b", "web")])
def test_instance_names_refuse_non_kubernetes_names(namespace: str, pod: str) -> None:
    with pytest.raises(ValueError, match="Kubernetes name"):
        instance_name(namespace, pod)


def test_long_names_are_cut_with_a_hash_and_stay_distinct() -> None:
    namespace = "n" * 63
    pods = ["-".join(["a" * 60] * 4) + "-1", "-".join(["a" * 60] * 4) + "-2"]  # 243 chars
    names = [unit_name("zeropod", instance_name(namespace, p), "service") for p in pods]
    assert names[0] != names[1]
    for name in names:
        assert len(name) <= UNIT_NAME_MAX
        instance = name[len("zeropod@") : -len(".service")]
        assert pod_of_instance(instance) is None  # shortened: no way back
    assert instance_name(namespace, pods[0]) == instance_name(namespace, pods[0])


def test_a_cut_never_splits_an_escape() -> None:
    for extra in range(8):
        instance = instance_name("n" * 60, "a-" * 100 + "b" * extra)
        head = instance.rsplit("_", 1)[0]
        # What remains unescapes cleanly and ends in whole escapes.
        assert systemd_escape(systemd_unescape(head)) == head


@pytest.mark.parametrize(
    ("prefix", "instance", "unit_type", "message"),
    [
        ("zeropod", "x", "sock", "unit type"),
        ("zero pod", "x", "socket", "escaped"),
        ("zeropod", "a@b", "socket", "escaped"),
        ("zeropod", "", "socket", "escaped"),
        ("zeropod", "x" * 250, "socket", "longer than"),
    ],
)
def test_unit_name_validation(prefix: str, instance: str, unit_type: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        unit_name(prefix, instance, unit_type)
