"""The back-off after failed sleeps: its schedule, and how the scaler and idle loop use it."""

from __future__ import annotations

import pytest
from daemon_fakes import World

from zeropod.config.annotations import SCALEDOWN_DURATION
from zeropod.contract.protocol import CHECKPOINT_FAILED, ControlError
from zeropod.daemon.lifecycle.backoff import MAX_DELAY, Backoff, delay_after
from zeropod.daemon.lifecycle.interfaces import ShimError
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.pod import PodKey

KEY = PodKey("shop", "web-1")
RLIMIT = ShimError(
    CHECKPOINT_FAILED,
    "checkpoint of x failed: runc: criu failed; CRIU: Can't get rlimit 0: Operation not "
    "permitted (criu/cr-dump.c:389); CRIU log: /images/x/dump.log",
)


@pytest.mark.parametrize(
    ("failures", "scaledown", "delay"),
    [
        (1, 5, 10),
        (2, 5, 20),
        (3, 5, 40),
        (8, 5, 1280),
        (9, 5, MAX_DELAY),
        (40, 5, MAX_DELAY),
        (1, 60, 120),
        (5, 60, MAX_DELAY),
        (1, 0.2, 2),  # a sub-second period still waits seconds
    ],
)
def test_delay_doubles_from_the_scaledown_duration_up_to_30_minutes(
    failures: int, scaledown: float, delay: float
) -> None:
    assert delay_after(failures, scaledown) == delay


def test_a_pod_that_never_sleeps_tries_at_most_ten_times_in_its_first_hour() -> None:
    now = [0.0]
    backoff = Backoff(clock=lambda: now[0], wall=lambda: 1e9 + now[0])
    tries = []
    scaledown = 5.0
    t = scaledown  # the first idle period
    while t < 3600:
        now[0] = t
        assert backoff.ready()
        tries.append(t)
        backoff.failed(backoff.delay_for_next(scaledown), "dump failed")
        assert not backoff.ready()
        assert backoff.next_try is not None
        t = backoff.next_try
    assert len(tries) <= 10
    assert tries[:4] == [5, 15, 35, 75]


def test_reset_clears_everything() -> None:
    backoff = Backoff()
    backoff.failed(10, "x")
    assert backoff.describe() is not None and not backoff.ready()
    backoff.reset()
    assert backoff.describe() is None and backoff.ready()


async def test_a_failed_dump_backs_off_logs_one_line_and_shows_in_status() -> None:
    world = World()
    app = world.register(annotations={SCALEDOWN_DURATION: "5s"})
    world.shim.refusals["app"] = [RLIMIT] * 5
    with pytest.raises(ControlError) as info:
        await world.sleep(KEY, "idle")
    assert "next idle try in 10 s" in info.value.message
    # Not a request in flight: the dump is not retried at once.
    assert world.rec.names().count("checkpoint") == 1
    assert app.phase.phase is Phase.RUNNING
    errors = [e for e in world.captured.entries if e[1] == 3]
    assert len(errors) == 1
    message, _, fields = errors[0]
    assert "Can't get rlimit 0" in message and fields["SLEEP_FAILURES"] == "1"
    assert fields["NEXT_TRY_S"] == "10.0" and fields["POD"] == "web-1"

    status = await world.service.handle(_status())
    backoff = status["containers"][0]["sleep_backoff"]
    assert backoff["failures"] == 1 and "rlimit" in backoff["reason"]
    assert backoff["next_try"].endswith("Z")

    # zeropodctl sleep tries at once (the back-off is the idle loop's), and doubles it.
    with pytest.raises(ControlError) as info:
        await world.sleep(KEY, "zeropodctl sleep")
    assert "next idle try in 20 s" in info.value.message
    assert world.life(KEY).backoff.failures == 2


async def test_a_successful_sleep_or_a_changed_pod_resets_the_back_off() -> None:
    world = World()
    world.register(annotations={SCALEDOWN_DURATION: "5s"})
    world.shim.refusals["app"] = [RLIMIT]
    with pytest.raises(ControlError):
        await world.sleep(KEY, "idle")
    assert world.life(KEY).backoff.failures == 1
    await world.sleep(KEY, "zeropodctl sleep")
    assert world.life(KEY).backoff.failures == 0

    await world.wake(KEY, "test")
    world.shim.refusals["app"] = [RLIMIT]
    with pytest.raises(ControlError):
        await world.sleep(KEY, "idle")
    world.register(annotations={SCALEDOWN_DURATION: "10s"})  # re-registered: changed
    assert world.life(KEY).backoff.failures == 0


def _status():
    from zeropod.contract.requests import StatusRequest

    return StatusRequest()


async def test_a_pod_whose_dump_always_fails_is_dumped_at_most_ten_times_in_an_hour() -> None:
    """The idle loop's view: it tries when the back-off is ready (5 s scale-down). CRIU's
    refusal is the one a request in flight also gets, so the first sleep retries once."""
    world = World()
    world.register(annotations={SCALEDOWN_DURATION: "5s"})
    refused = ShimError(CHECKPOINT_FAILED, "CRIU: inet: Connected TCP socket (sk-inet.c:191)")
    world.shim.refusals["app"] = [refused] * 100
    now = [5.0]  # the first idle period has passed
    backoff = world.life(KEY).backoff
    backoff.clock = lambda: now[0]
    while now[0] < 3600:
        assert backoff.ready()
        with pytest.raises(ControlError):
            await world.sleep(KEY, "idle")
        assert backoff.next_try is not None
        now[0] = backoff.next_try
    assert world.rec.names().count("checkpoint") <= 10
