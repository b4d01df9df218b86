"""What a shim's ``start`` prints, and rewriting it to name the interposer.

containerd 1.6/1.7 expect a plain ``unix://`` address; 2.x shims print bootstrap JSON
``{"version": 3, "address": ..., "protocol": "ttrpc"}``. The interposer prints the same form
the runc shim did, with its own address. The runc shim also writes an ``address`` file into
the bundle, which containerd reads to reconnect after a restart; it is rewritten too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


class BootstrapError(ValueError):
    """The runc shim's start output is neither an address nor bootstrap JSON."""


@dataclass(frozen=True, slots=True)
class Bootstrap:
    address: str
    params: dict | None = None  # the JSON object, for the 2.x form

    @property
    def task_api_version(self) -> int:
        """3 for the 2.x bootstrap form, else 2."""
        if self.params is None:
            return 2
        return 3 if int(self.params.get("version", 2)) >= 3 else 2

    def with_address(self, address: str) -> Bootstrap:
        if self.params is None:
            return Bootstrap(address)
        return Bootstrap(address, {**self.params, "address": address})

    def render(self) -> str:
        if self.params is None:
            return self.address
        return json.dumps(self.params, separators=(",", ":"))


def parse(output: bytes | str) -> Bootstrap:
    """Parse what a shim's ``start`` printed."""
    text = output.decode() if isinstance(output, bytes) else output
    text = text.strip()
    if text.startswith("{"):
        try:
            params = json.loads(text)
        except ValueError as err:
            raise BootstrapError(f"bad bootstrap JSON {text!r}: {err}") from err
        address = params.get("address") if isinstance(params, dict) else None
        if not isinstance(address, str) or not address:
            raise BootstrapError(f"bootstrap JSON without an address: {text!r}")
        protocol = params.get("protocol", "ttrpc")
        if protocol != "ttrpc":
            raise BootstrapError(f"unsupported shim protocol {protocol!r} in {text!r}")
        return Bootstrap(address, params)
    if not text.startswith("unix://") or "\n" in text:
        raise BootstrapError(f"expected a unix:// address or bootstrap JSON, got {text!r}")
    return Bootstrap(text)


def unix_path(address: str) -> str:
    """The filesystem path of a ``unix://`` address."""
    if not address.startswith("unix://"):
        raise BootstrapError(f"not a unix socket address: {address!r}")
    return address.removeprefix("unix://")


def write_address_file(bundle: Path, address: str) -> None:
    """Atomically (re)write the bundle's ``address`` file."""
    tmp = bundle / ".address.zeropod"
    tmp.write_text(address)
    os.replace(tmp, bundle / "address")
