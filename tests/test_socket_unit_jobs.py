"""Starting and stopping units through systemd's Manager, against a fake bus connection.

The fake answers each method call with a scripted reply and emits JobRemoved signals the way
dbus-fast would dispatch them: before the caller resumes from the reply, or later.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

dbus_fast = pytest.importorskip("dbus_fast")
from dbus_fast import Message, MessageType, Variant  # noqa: E402

from zeropod.sockets.listeners import Listener  # noqa: E402
from zeropod.systemd.manager import (  # noqa: E402
    MANAGER,
    SYSTEMD_PATH,
    JobFailedError,
    JobTracker,
    Systemd,
    SystemdError,
)
from zeropod.systemd.socket_unit import start_socket_unit, stop_unit  # noqa: E402

JOB = "/org/freedesktop/systemd1/job/42"


def job_removed(job: str, unit: str, result: str) -> Message:
    return Message(
        message_type=MessageType.SIGNAL,
        path=SYSTEMD_PATH,
        interface=MANAGER,
        member="JobRemoved",
        signature="uoss",
        body=[42, job, unit, result],
    )


def reply(msg: Message, signature: str = "", body: list[Any] | None = None) -> Message:
    return Message(
        message_type=MessageType.METHOD_RETURN,
        reply_serial=1,
        signature=signature,
        body=body or [],
    )


def error(name: str, text: str) -> Message:
    return Message(
        message_type=MessageType.ERROR,
        error_name=name,
        reply_serial=1,
        signature="s",
        body=[text],
    )


class FakeBus:
    """Answers calls by member with RESPOND(msg) -> (reply or None to hang, signals, early)."""

    def __init__(self, respond: Callable[[Message], tuple[Message | None, list[Message], bool]]):
        self.respond = respond
        self.handlers: list[Callable[[Message], Any]] = []
        self.calls: list[Message] = []
        self.disconnected = False

    def add_message_handler(self, handler: Callable[[Message], Any]) -> None:
        self.handlers.append(handler)

    def remove_message_handler(self, handler: Callable[[Message], Any]) -> None:
        self.handlers.remove(handler)

    def emit(self, signal: Message) -> None:
        for handler in list(self.handlers):
            handler(signal)

    def disconnect(self) -> None:
        self.disconnected = True

    async def call(self, msg: Message) -> Message:
        self.calls.append(msg)
        if msg.member in ("AddMatch", "Subscribe"):
            return reply(msg)
        answer, signals, early = self.respond(msg)
        if answer is None:
            await asyncio.Event().wait()  # never answers
        for signal in signals:
            if early:
                self.emit(signal)  # dispatched before the caller resumes
            else:
                asyncio.get_running_loop().call_later(0.01, self.emit, signal)
        return answer

    def members(self) -> list[str]:
        return [m.member for m in self.calls]


def job_answer(result: str, early: bool = False):
    def respond(msg: Message):
        unit = msg.body[0]
        return reply(msg, "o", [JOB]), [job_removed(JOB, unit, result)], early

    return respond


LISTENER = Listener(socket.AF_INET6, "::", 8080, 100, 3, False, 0)


@pytest.mark.parametrize("early", [True, False], ids=["signal-before-reply", "signal-later"])
async def test_start_waits_for_the_job(early: bool) -> None:
    bus = FakeBus(job_answer("done", early))
    await start_socket_unit(Systemd(bus), "zeropod@ns_p.socket", [LISTENER], "/run/netns/x")
    assert bus.members() == ["AddMatch", "Subscribe", "StartTransientUnit"]
    start = bus.calls[-1]
    assert start.signature == "ssa(sv)a(sa(sv))"
    name, mode, props, aux = start.body
    assert (name, mode, aux) == ("zeropod@ns_p.socket", "replace", [])
    got = dict(props)
    assert got["Listen"] == Variant("a(ss)", [("Stream", "[::]:8080")])
    assert got["ReusePort"] == Variant("b", True)
    assert got["BindIPv6Only"] == Variant("s", "both")
    # The message marshals (signatures and values agree).
    start._marshall(False)


async def test_subscribes_once_per_connection() -> None:
    bus = FakeBus(job_answer("done"))
    systemd = Systemd(bus)
    await systemd.stop_unit("a.socket")
    await systemd.stop_unit("b.socket")
    assert bus.members() == ["AddMatch", "Subscribe", "StopUnit", "StopUnit"]


async def test_a_failed_job_names_unit_and_result() -> None:
    bus = FakeBus(job_answer("failed"))
    with pytest.raises(JobFailedError, match=r"zeropod@x.socket: start job .*'failed'") as info:
        await start_socket_unit(Systemd(bus), "zeropod@x.socket", [LISTENER], "/run/netns/x")
    assert info.value.result == "failed"
    assert info.value.unit == "zeropod@x.socket"


async def test_an_existing_unit_is_an_error_with_the_dbus_name() -> None:
    exists = "org.freedesktop.systemd1.UnitExists"
    bus = FakeBus(lambda m: (error(exists, "Unit zeropod@x.socket already exists."), [], False))
    with pytest.raises(SystemdError, match=r"zeropod@x\.socket: StartTransientUnit failed") as info:
        await start_socket_unit(Systemd(bus), "zeropod@x.socket", [LISTENER], "/run/netns/x")
    assert info.value.dbus_error == exists


async def test_stopping_a_unit_that_is_not_loaded() -> None:
    no_unit = "org.freedesktop.systemd1.NoSuchUnit"
    bus = FakeBus(lambda m: (error(no_unit, "Unit x.socket not loaded."), [], False))
    assert await stop_unit(Systemd(bus), "x.socket") is False


async def test_a_job_that_never_ends_times_out() -> None:
    bus = FakeBus(lambda m: (reply(m, "o", [JOB]), [], False))
    message = r"x.socket: stop did not finish in 0.05 s \(job .*/42 still running\)"
    with pytest.raises(SystemdError, match=message):
        await stop_unit(Systemd(bus), "x.socket", timeout=0.05)


async def test_no_reply_times_out() -> None:
    bus = FakeBus(lambda m: (None, [], False))
    message = r"x.socket: stop did not finish in 0.05 s \(no reply to StopUnit\)"
    with pytest.raises(SystemdError, match=message):
        await stop_unit(Systemd(bus), "x.socket", timeout=0.05)


async def test_other_jobs_do_not_confuse_the_wait() -> None:
    def respond(msg: Message):
        unit = msg.body[0]
        others = [job_removed(f"/job/{i}", "other.service", "failed") for i in range(600)]
        return reply(msg, "o", [JOB]), [*others, job_removed(JOB, unit, "done")], True

    assert await stop_unit(Systemd(FakeBus(respond)), "x.socket") is True


def test_unclaimed_results_are_bounded() -> None:
    tracker = JobTracker()
    for i in range(2000):
        tracker.on_message(job_removed(f"/job/{i}", "u", "done"))
    assert len(tracker._unclaimed) <= 512
    assert "/job/1999" in tracker._unclaimed


async def test_the_context_closes_the_connection() -> None:
    bus = FakeBus(job_answer("done"))
    async with Systemd(bus) as systemd:
        await systemd.stop_unit("x.socket")
    assert bus.disconnected


async def test_active_state_of_a_unit_and_of_none() -> None:
    def respond(msg: Message):
        if msg.member == "GetUnit" and msg.body[0] == "gone.socket":
            return error("org.freedesktop.systemd1.NoSuchUnit", "not loaded"), [], False
        if msg.member == "GetUnit":
            return reply(msg, "o", ["/org/freedesktop/systemd1/unit/x_2esocket"]), [], False
        assert (msg.member, msg.body) == ("Get", ["org.freedesktop.systemd1.Unit", "ActiveState"])
        return reply(msg, "v", [Variant("s", "active")]), [], False

    systemd = Systemd(FakeBus(respond))
    assert await systemd.unit_active_state("x.socket") == "active"
    assert await systemd.unit_active_state("gone.socket") is None


async def test_a_cancelled_subscription_is_retried() -> None:
    bus = FakeBus(job_answer("done"))
    systemd = Systemd(bus)
    hang = asyncio.Event()
    real_call = bus.call

    async def slow_call(msg: Message) -> Message:
        if msg.member == "AddMatch" and not hang.is_set():
            hang.set()
            await asyncio.Event().wait()
        return await real_call(msg)

    bus.call = slow_call  # type: ignore[method-assign]
    with pytest.raises(SystemdError, match=r"did not finish in 0.05 s \(subscribing"):
        await systemd.stop_unit("x.socket", timeout=0.05)
    assert bus.handlers == []
    assert await systemd.stop_unit("x.socket") is True
