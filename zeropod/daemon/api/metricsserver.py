"""The metrics' HTTP endpoint: its address (``HOST:PORT``, or ``off``) and a threaded server."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from zeropod.daemon.api.metrics import SCRAPE_TIMEOUT, Metrics

IDLE_TIMEOUT = 10.0
"""Seconds a metrics connection may stay silent before it is closed."""


class AddressError(ValueError):
    """A metrics address that is not ``HOST:PORT``."""


def parse_address(value: str, key: str = "ZEROPOD_METRICS_ADDRESS") -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::1]:9925`` for IPv6) as (host, port); None for ``off`` or empty.

    Raises AddressError naming ``key``, the value and what is allowed.
    """
    text = value.strip()
    if text in ("", "off"):
        return None
    host, sep, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not host or not 0 < port < 65536:
        raise AddressError(
            f"{key}={value!r}: expected HOST:PORT (e.g. 127.0.0.1:9925, [::1]:9925, "
            "0.0.0.0:9925) or 'off'"
        )
    return host, port


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (the journal) for every scrape; silent connections closed."""

    def setup(self) -> None:
        self.timeout = IDLE_TIMEOUT  # each connection holds a thread while it is open
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        return


class MetricsServer:
    """prometheus_client's WSGI app on a threading HTTP server in a daemon thread."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        server_class = type("MetricsHTTPServer", (ThreadingWSGIServer,), {})
        if ":" in host:
            server_class.address_family = socket.AF_INET6
        self._httpd = make_server(
            host, port, make_wsgi_app(metrics.collectors), server_class, _QuietHandler
        )
        self.address: tuple[str, int] = self._httpd.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="zeropod-metrics", daemon=True
        )

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving (waits for the server thread; a scrape in progress finishes)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(SCRAPE_TIMEOUT)


def serve(metrics: Metrics, host: str, port: int) -> MetricsServer:
    """Serve ``metrics`` on http://host:port/ from now on; scrapes read the registry on the
    running loop. Raises OSError when the address cannot be bound."""
    metrics.state.loop = asyncio.get_running_loop()
    server = MetricsServer(metrics, host, port)
    server.start()
    return server
