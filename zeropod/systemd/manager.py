"""systemd's Manager over D-Bus (dbus-fast, asyncio): start and stop units, wait for their jobs.

Every start or stop queues a job; the call returns when systemd's JobRemoved signal says the
job ended, with "done" as the only success. The signal can be dispatched before the method
reply resumes the caller, so one `JobTracker` per bus connection subscribes once and keeps
results that nobody waits for yet (a bounded number: it also sees other clients' jobs). A
`Systemd` object holds one connection and its tracker (dbus-fast's bus cannot carry it).

    async with await Systemd.connect() as systemd:
        await systemd.start_transient_unit("x.socket", [("Listen", "a(ss)", [("Stream", "80")])])
        await systemd.stop_unit("x.socket")

Every wait has a timeout; errors name the unit.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
JOB_REMOVED_MATCH = (
    f"type='signal',sender='{SYSTEMD}',path='{SYSTEMD_PATH}',"
    f"interface='{MANAGER}',member='JobRemoved'"
)
DEFAULT_TIMEOUT = 10.0
_KEEP_UNCLAIMED = 512


class SystemdError(RuntimeError):
    """A call to systemd failed or timed out; `unit` names the unit it was about."""

    def __init__(self, unit: str, message: str, dbus_error: str | None = None) -> None:
        super().__init__(f"{unit}: {message}")
        self.unit = unit
        self.dbus_error = dbus_error


class JobFailedError(SystemdError):
    """A job ended with a result other than "done" (failed, canceled, timeout, dependency...)."""

    def __init__(self, unit: str, verb: str, result: str) -> None:
        super().__init__(
            unit, f"{verb} job ended with result {result!r} (journalctl -u {unit} says why)"
        )
        self.result = result


class JobTracker:
    """The JobRemoved signals of one bus connection, matched to the jobs callers wait for."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self._unclaimed: OrderedDict[str, str] = OrderedDict()

    def on_message(self, msg: Message) -> None:
        if (
            msg.message_type != MessageType.SIGNAL
            or msg.member != "JobRemoved"
            or msg.interface != MANAGER
        ):
            return
        _job_id, job_path, _unit, result = msg.body
        future = self._waiting.pop(job_path, None)
        if future is not None and not future.done():
            future.set_result(result)
            return
        self._unclaimed[job_path] = result
        while len(self._unclaimed) > _KEEP_UNCLAIMED:
            self._unclaimed.popitem(last=False)

    async def wait(self, job_path: str, timeout: float | None = None) -> str:
        """The result of job JOB_PATH ("done", "failed", ...); TimeoutError after TIMEOUT s."""
        if job_path in self._unclaimed:
            return self._unclaimed.pop(job_path)
        future = asyncio.get_running_loop().create_future()
        self._waiting[job_path] = future
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._waiting.pop(job_path, None)


async def call(
    bus: MessageBus,
    unit: str,
    member: str,
    signature: str,
    body: list[Any],
    timeout: float = DEFAULT_TIMEOUT,
    bus_daemon: bool = False,
) -> list[Any]:
    """Call MEMBER on systemd's Manager (or the bus daemon); return the reply body.

    Raises SystemdError naming UNIT on a D-Bus error or after TIMEOUT seconds.
    """
    if bus_daemon:
        dest, path, iface = "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus"
    else:
        dest, path, iface = SYSTEMD, SYSTEMD_PATH, MANAGER
    msg = Message(
        destination=dest,
        path=path,
        interface=iface,
        member=member,
        signature=signature,
        body=body,
    )
    try:
        async with asyncio.timeout(timeout):
            reply = await bus.call(msg)
    except TimeoutError as err:
        raise SystemdError(unit, f"{member} got no reply in {timeout:g} s") from err
    assert reply is not None
    if reply.message_type == MessageType.ERROR:
        detail = reply.body[0] if reply.body else ""
        raise SystemdError(unit, f"{member} failed: {reply.error_name}: {detail}", reply.error_name)
    return list(reply.body)


class Systemd:
    """systemd's Manager on one D-Bus connection, with the JobTracker of that connection.

    Create it once (the daemon keeps it for its lifetime) with `await Systemd.connect()` or
    around an existing bus; the first job subscribes to systemd's signals.
    """

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._tracker: asyncio.Future[JobTracker] | None = None

    @classmethod
    async def connect(cls) -> Systemd:
        """A connection to the system bus (the daemon's systemd), ready to use."""
        return cls(await MessageBus(bus_type=BusType.SYSTEM).connect())

    def close(self) -> None:
        self.bus.disconnect()

    async def __aenter__(self) -> Systemd:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def jobs(self, timeout: float = DEFAULT_TIMEOUT) -> JobTracker:
        """This connection's JobTracker; the first call subscribes to systemd's signals."""
        if self._tracker is None:
            self._tracker = asyncio.get_running_loop().create_future()
            tracker = JobTracker()
            try:
                self.bus.add_message_handler(tracker.on_message)
                await call(self.bus, "-", "AddMatch", "s", [JOB_REMOVED_MATCH], timeout, True)
                await call(self.bus, "-", "Subscribe", "", [], timeout)
            except BaseException as err:
                # Waiting callers get the same outcome; the next call tries again.
                self.bus.remove_message_handler(tracker.on_message)
                pending, self._tracker = self._tracker, None
                if isinstance(err, asyncio.CancelledError):
                    pending.cancel()
                else:
                    pending.set_exception(err)
                    pending.exception()  # retrieved: no "never retrieved" warning
                raise
            self._tracker.set_result(tracker)
        return await asyncio.shield(self._tracker)

    async def _run_job(
        self, unit: str, verb: str, member: str, signature: str, body: list[Any], timeout: float
    ) -> None:
        stage = "subscribing to systemd's signals"
        try:
            async with asyncio.timeout(timeout):
                tracker = await self.jobs(timeout)
                stage = f"no reply to {member}"
                (job_path,) = await call(self.bus, unit, member, signature, body, timeout)
                stage = f"job {job_path} still running"
                result = await tracker.wait(job_path)
        except TimeoutError as err:
            raise SystemdError(unit, f"{verb} did not finish in {timeout:g} s ({stage})") from err
        if result != "done":
            raise JobFailedError(unit, verb, result)

    async def start_transient_unit(
        self,
        name: str,
        properties: Sequence[tuple[str, str, Any]],
        mode: str = "replace",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Create transient unit NAME with PROPERTIES, (name, D-Bus signature, value) triples,
        and start it; return once it has started.

        Raises SystemdError (e.g. UnitExists while a unit of that name is loaded) or
        JobFailedError; blocks at most TIMEOUT seconds.
        """
        props = [[key, Variant(sig, value)] for key, sig, value in properties]
        body = [name, mode, props, []]
        await self._run_job(name, "start", "StartTransientUnit", "ssa(sv)a(sa(sv))", body, timeout)

    async def stop_unit(
        self, name: str, mode: str = "replace", timeout: float = DEFAULT_TIMEOUT
    ) -> bool:
        """Stop unit NAME and wait until it has stopped. False when it was not loaded at all.

        Raises SystemdError or JobFailedError; blocks at most TIMEOUT seconds.
        """
        try:
            await self._run_job(name, "stop", "StopUnit", "ss", [name, mode], timeout)
        except SystemdError as err:
            if err.dbus_error == NO_SUCH_UNIT:
                return False
            raise
        return True

    async def list_units(
        self, pattern: str, timeout: float = DEFAULT_TIMEOUT
    ) -> list[tuple[str, str]]:
        """(name, ActiveState) of each loaded unit whose name matches the glob PATTERN."""
        units = await call(
            self.bus, pattern, "ListUnitsByPatterns", "asas", [[], [pattern]], timeout
        )
        return [(unit[0], unit[3]) for unit in units[0]]

    async def unit_active_state(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> str | None:
        """The unit's ActiveState ("active", "failed", ...), or None when it is not loaded."""
        try:
            (path,) = await call(self.bus, name, "GetUnit", "s", [name], timeout)
        except SystemdError as err:
            if err.dbus_error == NO_SUCH_UNIT:
                return None
            raise
        msg = Message(
            destination=SYSTEMD,
            path=path,
            interface="org.freedesktop.DBus.Properties",
            member="Get",
            signature="ss",
            body=["org.freedesktop.systemd1.Unit", "ActiveState"],
        )
        try:
            async with asyncio.timeout(timeout):
                reply = await self.bus.call(msg)
        except TimeoutError as err:
            raise SystemdError(name, f"reading ActiveState got no reply in {timeout:g} s") from err
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            return None  # unloaded between the two calls
        return str(reply.body[0].value)
