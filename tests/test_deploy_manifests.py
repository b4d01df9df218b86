"""deploy/*.yaml against the Kubernetes API schema of released versions (kubernetes-validate's
published schemas, strict: unknown fields fail), and what the installer relies on in them."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest

kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parent.parent
VERSIONS = ("1.29.0", "1.31.0", "1.33.0")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((REPO / "deploy" / name).read_text()) if d]


ALL = [(name, doc) for name in ("zeropod.yaml", "uninstall.yaml") for doc in documents(name)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "doc"), ALL, ids=[f"{n}:{d['kind']}" for n, d in ALL])
def test_every_resource_validates_strictly(name: str, doc: dict, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_a_wrong_field_is_caught() -> None:
    daemonset = copy.deepcopy(next(d for _, d in ALL if d["kind"] == "DaemonSet"))
    daemonset["spec"]["template"]["spec"]["initContainers"][0]["privilegd"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, VERSIONS[-1], strict=True)


def test_the_installer_and_the_runtime_class_agree() -> None:
    by_kind = {d["kind"]: d for d in documents("zeropod.yaml")}
    assert by_kind["RuntimeClass"]["handler"] == "zeropod"
    label = by_kind["RuntimeClass"]["scheduling"]["nodeSelector"]
    pod = by_kind["DaemonSet"]["spec"]["template"]["spec"]
    assert label.items() <= pod["nodeSelector"].items()
    init = pod["initContainers"][0]
    assert init["command"] == ["zeropod", "install", "--host-root", "/host"]
    assert init["image"] == f"localhost/zeropod/installer:{VERSION}"
    assert init["securityContext"]["privileged"] is True
    mount = next(m for m in init["volumeMounts"] if m["mountPath"] == "/host")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"]["path"] == "/"
    uninstall = documents("uninstall.yaml")[0]["spec"]["template"]["spec"]["initContainers"][0]
    assert uninstall["command"][-1] == "--uninstall" and uninstall["image"] == init["image"]
