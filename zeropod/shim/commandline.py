"""Parse the Go-style command line containerd gives a shim.

containerd runs ``<shim> -namespace NS -address ADDR -publish-binary BIN -id ID [-debug]
[-bundle DIR] start|delete``. Go's flag package accepts ``-flag value``, ``-flag=value`` and
``--flag``; boolean flags take no value (``-debug``, ``-debug=true``); parsing stops at the
first non-flag argument, which is the action.
"""

from __future__ import annotations

from dataclasses import dataclass

VALUE_FLAGS = frozenset({"namespace", "address", "publish-binary", "id", "bundle", "socket"})
BOOL_FLAGS = frozenset({"debug", "v", "info"})
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


class FlagError(ValueError):
    """The command line is not one containerd would produce."""


@dataclass(frozen=True, slots=True)
class ShimArgs:
    """containerd's shim command line, parsed; ``argv`` keeps it verbatim for the runc shim."""

    argv: tuple[str, ...]
    namespace: str = ""
    address: str = ""
    publish_binary: str = ""
    id: str = ""
    bundle: str = ""
    socket: str = ""
    debug: bool = False
    version: bool = False
    info: bool = False
    action: str = ""
    rest: tuple[str, ...] = ()


def parse_args(argv: list[str] | tuple[str, ...]) -> ShimArgs:
    """Parse ``argv`` (without the program name); raises FlagError naming the bad flag."""
    values: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if len(arg) < 2 or arg[0] != "-":
            break
        name = arg[2:] if arg.startswith("--") else arg[1:]
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        if name in BOOL_FLAGS:
            if value is None or value in _TRUE:
                values[name] = True
            elif value in _FALSE:
                values[name] = False
            else:
                raise FlagError(f"invalid boolean value {value!r} for flag -{name}")
        elif name in VALUE_FLAGS:
            if value is None:
                i += 1
                if i >= len(argv):
                    raise FlagError(f"flag needs an argument: -{name}")
                value = argv[i]
            values[name] = value
        else:
            raise FlagError(
                f"flag provided but not defined: -{name} "
                f"(known: {', '.join(sorted(VALUE_FLAGS | BOOL_FLAGS))})"
            )
        i += 1
    positional = tuple(argv[i:])
    return ShimArgs(
        argv=tuple(argv),
        namespace=str(values.get("namespace", "")),
        address=str(values.get("address", "")),
        publish_binary=str(values.get("publish-binary", "")),
        id=str(values.get("id", "")),
        bundle=str(values.get("bundle", "")),
        socket=str(values.get("socket", "")),
        debug=bool(values.get("debug", False)),
        version=bool(values.get("v", False)),
        info=bool(values.get("info", False)),
        action=positional[0] if positional else "",
        rest=positional[1:],
    )
