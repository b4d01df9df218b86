"""Prometheus metrics of the daemon's containers, served over HTTP.

Names and labels (``container``, ``pod``, ``namespace``) follow upstream zeropod where it has
them; the rest are ours:

- histograms ``zeropod_checkpoint_duration_seconds``, ``zeropod_restore_duration_seconds``
  and ``zeropod_wake_latency_seconds`` (a client's wait: from its arrival, as the daemon
  knows it, to the held sockets being released to the app), buckets from 10 ms to 10 s;
  fed from the daemon's event hub (:meth:`Metrics.follow`), the durations taken from the
  ``measured`` record each transition event carries;
- read from the registry at scrape time (:class:`StateCollector`): ``zeropod_running``
  (1/0), ``zeropod_last_checkpoint_time`` and ``zeropod_last_restore_time`` (unix time, from
  the phase history), ``zeropod_checkpoint_errors_total``, ``zeropod_restore_errors_total``,
  ``zeropod_checkpoint_image_bytes``, ``zeropod_memory_rss_bytes`` and
  ``zeropod_memory_pss_bytes`` (the app's memory just before its last checkpoint: what the
  sleep frees), ``zeropod_probes_answered_total`` (answered for its pod while asleep) and the
  unlabelled ``zeropod_sleeping_containers`` of this node.

A deleted container's series disappear: the scrape-time ones with the container, the
histograms on its ``unregistered`` event. The registry belongs to the event loop, so a scrape
(prometheus_client's HTTP server runs in a thread) reads it through
``run_coroutine_threadsafe`` and never touches it from the server's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from zeropod.contract.protocol import ControlError
from zeropod.daemon.api.eventhub import EventHub
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.registry import Container, Registry

LABELS = ("container", "pod", "namespace")
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: 10 ms to 10 s (plus +Inf)."""
SCRAPE_TIMEOUT = 5.0
"""Seconds a scrape waits for the event loop to read the registry."""
RESTORED_AFTER_FAILED_SLEEP = "restored after a failed sleep"
"""The reason of a RUNNING transition that did not measure a restore (see sleep.py)."""


def labels_of(event_or_container: dict[str, Any] | Container) -> tuple[str, str, str]:
    """The (container, pod, namespace) label values of an event or a container."""
    if isinstance(event_or_container, Container):
        identity = event_or_container.identity
        return identity.container, identity.pod, identity.namespace
    event = event_or_container
    return str(event["container"]), str(event["pod"]), str(event["namespace"])


class Metrics:
    """The daemon's metrics: histograms fed by events, the rest read from ``registry``."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.collectors = CollectorRegistry(auto_describe=False)
        self.checkpoint = Histogram(
            "zeropod_checkpoint_duration_seconds",
            "How long checkpointing a container took (the shim's dump).",
            LABELS,
            buckets=BUCKETS,
            registry=self.collectors,
        )
        self.restore = Histogram(
            "zeropod_restore_duration_seconds",
            "How long restoring a container took (the shim's restore or cold start).",
            LABELS,
            buckets=BUCKETS,
            registry=self.collectors,
        )
        self.wake_latency = Histogram(
            "zeropod_wake_latency_seconds",
            "How long a client that woke a sleeping pod waited: from its arrival (the start "
            "of the activated service) to the release of the held sockets to the app.",
            LABELS,
            buckets=BUCKETS,
            registry=self.collectors,
        )
        self.state = StateCollector(registry)
        self.collectors.register(self.state)

    def observe(self, event: dict[str, Any]) -> None:
        """Account for one hub event (called on the event loop, in publishing order)."""
        labels = labels_of(event)
        if event.get("type") == "unregistered":
            for histogram in (self.checkpoint, self.restore, self.wake_latency):
                with contextlib.suppress(KeyError):
                    histogram.remove(*labels)
            return
        if event.get("type") != "transition":
            return
        measured = event.get("measured") or {}
        previous, state = event.get("previous"), event.get("state")
        if previous == Phase.CHECKPOINTING.value and state == Phase.SCALED_DOWN.value:
            _observe_ms(self.checkpoint, labels, measured.get("last_checkpoint_ms"))
        elif previous == Phase.RESTORING.value and state == Phase.RUNNING.value:
            if event.get("reason") != RESTORED_AFTER_FAILED_SLEEP:
                _observe_ms(self.restore, labels, measured.get("last_restore_ms"))
            since = measured.get("client_waiting_since")
            if isinstance(since, int | float):
                at = datetime.fromisoformat(str(event["time"])).timestamp()
                self.wake_latency.labels(*labels).observe(max(0.0, at - since))

    async def follow(self, hub: EventHub) -> None:
        """Observe the hub's events until cancelled (re-subscribes if it ever falls behind)."""
        while True:
            subscription = hub.subscribe()
            try:
                while True:
                    event = await subscription.get()
                    try:
                        self.observe(event)
                    except Exception as err:  # one bad event, not the metrics
                        print(f"zeropod: metrics dropped an event: {err!r}", file=sys.stderr)
            except ControlError:
                continue  # overflowed: some histogram samples are lost, go on
            finally:
                subscription.close()

    def exposition(self) -> bytes:
        """The text format of every metric (for tests and debugging; on any thread)."""
        return generate_latest(self.collectors)


def _observe_ms(histogram: Histogram, labels: tuple[str, str, str], value: object) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        histogram.labels(*labels).observe(value / 1000.0)


class StateCollector:
    """The metrics read from the registry at scrape time, on the event loop."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop that owns the registry; set by :func:`serve` (None: read directly)."""

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus_client per scrape, on the HTTP server's thread."""
        loop = self.loop
        if loop is None or _on_loop_thread(loop):
            yield from self.read()
            return

        async def read_on_loop() -> list[Metric]:
            return self.read()

        future = asyncio.run_coroutine_threadsafe(read_on_loop(), loop)
        yield from future.result(SCRAPE_TIMEOUT)

    def read(self) -> list[Metric]:
        """Every scrape-time metric family, from the registry as it is now."""
        families = {
            "running": GaugeMetricFamily(
                "zeropod_running",
                "1 while the container runs, 0 while it is scaled down.",
                labels=LABELS,
            ),
            "last_checkpoint": GaugeMetricFamily(
                "zeropod_last_checkpoint_time",
                "When the container was last checkpointed (unix time).",
                labels=LABELS,
            ),
            "last_restore": GaugeMetricFamily(
                "zeropod_last_restore_time",
                "When the container was last restored (unix time).",
                labels=LABELS,
            ),
            "checkpoint_errors": CounterMetricFamily(
                "zeropod_checkpoint_errors",
                "Checkpoints of the container that failed.",
                labels=LABELS,
            ),
            "restore_errors": CounterMetricFamily(
                "zeropod_restore_errors",
                "Restores of the container that failed (started cold or not at all).",
                labels=LABELS,
            ),
            "page_fetch_failures": CounterMetricFamily(
                "zeropod_page_fetch_failures",
                "Lazy restores whose page server failed after the app ran (it was killed and "
                "started cold; also counted in zeropod_restore_errors_total).",
                labels=LABELS,
            ),
            "image": GaugeMetricFamily(
                "zeropod_checkpoint_image_bytes",
                "Size of the container's last checkpoint image.",
                labels=LABELS,
            ),
            "rss": GaugeMetricFamily(
                "zeropod_memory_rss_bytes",
                "The app's resident memory just before its last checkpoint (freed by sleeping).",
                labels=LABELS,
            ),
            "pss": GaugeMetricFamily(
                "zeropod_memory_pss_bytes",
                "The app's proportional memory just before its last checkpoint.",
                labels=LABELS,
            ),
            "probes": CounterMetricFamily(
                "zeropod_probes_answered",
                "Probes answered by the daemon for the container's pod while it slept.",
                labels=LABELS,
            ),
        }
        sleeping = 0
        for container in self.registry:
            if not container.managed:
                continue
            labels = list(labels_of(container))
            phase = container.phase.phase
            sleeping += phase is Phase.SCALED_DOWN
            measured = container.measured
            families["running"].add_metric(labels, 1.0 if phase is Phase.RUNNING else 0.0)
            checkpointed, restored = _last_times(container)
            _add(families["last_checkpoint"], labels, checkpointed)
            _add(families["last_restore"], labels, restored)
            families["checkpoint_errors"].add_metric(labels, measured.checkpoint_errors)
            families["restore_errors"].add_metric(labels, measured.restore_errors)
            families["page_fetch_failures"].add_metric(labels, measured.page_fetch_failures)
            _add(families["image"], labels, measured.last_image_bytes)
            _add(families["rss"], labels, measured.last_rss_bytes)
            _add(families["pss"], labels, measured.last_pss_bytes)
            families["probes"].add_metric(labels, measured.probes_answered)
        node = GaugeMetricFamily(
            "zeropod_sleeping_containers", "Containers scaled down on this node.", value=sleeping
        )
        return [*families.values(), node]


def _add(family: GaugeMetricFamily, labels: list[str], value: float | None) -> None:
    if value is not None:
        family.add_metric(labels, float(value))


def _last_times(container: Container) -> tuple[float | None, float | None]:
    """When the container last reached SCALED_DOWN from a dump, and RUNNING from a restore."""
    checkpointed = restored = None
    for transition in container.phase.history:
        if transition.previous is Phase.CHECKPOINTING and transition.phase is Phase.SCALED_DOWN:
            checkpointed = transition.at
        elif transition.previous is Phase.RESTORING and transition.phase is Phase.RUNNING:
            restored = transition.at
    return checkpointed, restored


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
