"""The web server of the dashboard and of ``orchestrate serve``: the address it may listen on,
the socket, the serving thread.

We bind and listen ourselves (Werkzeug would ``sys.exit`` on a port in use) and hand the
socket to ``webui.http_server`` (Werkzeug's handler, with bounded connections), so a taken
port is a ``GatewayError`` with a message that tells the user what to do.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading

from meta_orchestrator.config.settings import WebSettings
from meta_orchestrator.messages.gateway import GatewayAddress
from meta_orchestrator.webui.http_server import BoundedWSGIServer
from meta_orchestrator.webui.security import is_loopback

logger = logging.getLogger(__name__)

PORT_TRIES = 20  # with next_free_port: this port and the next ones
POLL_INTERVAL_S = 30.0  # a stop wakes the loop itself: this is only its longest sleep
BACKLOG = 128


class GatewayError(Exception):
    """The dashboard cannot start (e.g. its port is in use); the message tells the user why."""


class DashboardServer:
    """Bound on creation (so a bad address fails at once); serving once ``start`` is called."""

    def __init__(self, settings: WebSettings, next_free_port: bool = False, name: str = "gateway-http") -> None:
        if not is_loopback(settings.host):
            if not settings.allow_remote:
                raise GatewayError(
                    f"the dashboard host {settings.host!r} is reachable from other machines; pass "
                    "--allow-remote if you mean it (or keep 127.0.0.1 and use an SSH tunnel)"
                )
            logger.warning(
                "the dashboard listens on %s, not only this machine: the token travels in clear "
                "over plain HTTP; anyone who can read the traffic can steer the agents",
                settings.host,
            )
        self.host = settings.host
        self._settings = settings
        self._listener = _bind(settings.host, settings.port, tries=PORT_TRIES if next_free_port else 1)
        self.port: int = self._listener.getsockname()[1]
        self._name = f"{name}-{self.port}"
        self._server: BoundedWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def mount(self, app: object) -> None:
        """The WSGI app to serve; the server takes its own duplicate of the bound socket."""
        try:
            self._server = BoundedWSGIServer(
                self.host, self.port, app, self._settings, fd=self._listener.fileno(), name=self._name
            )
        finally:
            self._listener.close()

    def start(self) -> None:
        assert self._server is not None, "mount an app first"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_S},
            name=self._name,
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def address(self, token: str) -> GatewayAddress:
        """Where the dashboard listens, and the address (with token) to give the user."""
        host = self.host
        if is_loopback(host) and host != "localhost" or host in ("0.0.0.0", "::", "[::]", ""):
            host = "127.0.0.1"  # a browsable address, also when bound to every interface
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        base = f"http://{host}:{self.port}"
        return GatewayAddress(host=self.host, port=self.port, base_url=base, url=f"{base}/?token={token}")


def _bind(host: str, port: int, tries: int) -> socket.socket:
    """A listening socket on ``host`` at ``port`` or, with ``tries`` > 1, the next free one."""
    last: OSError | None = None
    for candidate in range(port, port + tries) if port else (0,):
        if candidate > 65535:
            break
        try:
            infos = socket.getaddrinfo(host.strip("[]"), candidate, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise GatewayError(f"cannot use dashboard host {host!r}: {exc}") from None
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
            if candidate != port:
                logger.warning("port %d is in use; the dashboard uses port %d", port, candidate)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno != errno.EADDRINUSE:
                break
    if last is not None and last.errno == errno.EADDRINUSE:
        more = f" (tried {port}..{port + tries - 1})" if tries > 1 else ""
        raise GatewayError(
            f"port {port} on {host} is already in use{more}: stop the program using "
            f"it, or choose another with --port (0 picks a free port)"
        ) from None
    raise GatewayError(f"cannot listen on {host}:{port}: {last}") from None


__all__ = ["DashboardServer", "GatewayError"]
