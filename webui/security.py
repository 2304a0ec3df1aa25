"""Who may drive the dashboard: the token, the Host allowlist and the Origin and body rules.

Only the dashboard's own page can act. It reads the token from the address the launcher
printed, keeps it in ``sessionStorage`` and sends it on every call: in the
``X-Orchestrate-Token`` header for the API, as the WebSocket subprotocol ``token.<token>``
(beside ``orchestrate``) for the socket, since a browser cannot set headers there. Nothing a
browser attaches by itself (cookies, a form's body, the address of the page) authorises
anything, so a page from another origin, even another port of 127.0.0.1, cannot act:

* a form or a ``no-cors`` fetch cannot set the header, and is refused (401), and a POST
  without ``Content-Type: application/json`` is refused (415) before any token is read;
* a fetch that sets the header needs a CORS preflight, which is refused (403, no CORS headers);
* an ``Origin`` other than the dashboard's own (scheme, host and port) is refused (403) on the
  WebSocket and on every state-changing request;
* a ``Host`` outside the allowlist is refused (403): a site that resolves its name to
  127.0.0.1 (DNS rebinding) is not the dashboard.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from werkzeug.datastructures import Headers

TOKEN_HEADER = "X-Orchestrate-Token"
WS_PROTOCOL = "orchestrate"
WS_TOKEN_PREFIX = "token."
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Read-only event streams that also take ?token=: an EventSource cannot send a header.
STREAM_PATHS = ("/api/stream",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    bare = host.strip("[]")
    if bare in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _addresses(name: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError):
        return set()


def allowed_hosts(bind_host: str) -> frozenset[str]:
    """The names a browser may use in ``Host`` to reach a dashboard bound to ``bind_host``.

    Loopback: the loopback names. Another interface: its given name and its addresses (and
    the loopback names, for a browser on the machine itself). Every interface (0.0.0.0):
    the machine's names and addresses as well.
    """
    bare = bind_host.strip("[]").lower()
    names = set(LOOPBACK_NAMES)
    if is_loopback(bare):
        return frozenset(names | {bare})
    if bare in WILDCARD_HOSTS:
        for name in {socket.gethostname(), socket.getfqdn()}:
            names |= {name.lower()} | _addresses(name)
    else:
        names |= {bare} | _addresses(bare)
    return frozenset(n.lower() for n in names)


def host_name(netloc: str) -> str:
    """``Host`` without its port, lower case, IPv6 without brackets ('' if unreadable)."""
    try:
        return (urlsplit(f"//{netloc}").hostname or "").lower()
    except ValueError:
        return ""


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused, and the HTTP status that says so."""

    status: int
    reason: str


@dataclass(frozen=True)
class Guard:
    """The checks for one dashboard: its token, its port and the hosts it answers to."""

    token: str
    port: int
    hosts: frozenset[str]

    def token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def origin_ok(self, origin: str, host: str) -> bool:
        """``origin`` is this dashboard's own: http, the host the request was sent to, our port."""
        parts = urlsplit(origin)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        return parts.scheme == "http" and parts.hostname == host_name(host) and port == self.port

    def check(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | Headers,
        query_token: str | None = None,
    ) -> Refusal | None:
        """``None`` if the request may go on; otherwise why not.

        ``headers`` is the request's headers, looked up without regard to case (``Host``,
        ``Origin``, ``Content-Type``, ``X-Orchestrate-Token``, ``Sec-WebSocket-Protocol``).
        """
        host = headers.get("Host", "")
        if host_name(host) not in self.hosts:
            return Refusal(403, f"unexpected Host header {host[:100]!r}")
        guarded = path == "/ws" or (path.startswith("/api/") and path != "/api/health")
        if not guarded:
            return None
        origin = headers.get("Origin")
        unsafe = method in UNSAFE_METHODS or method == "OPTIONS"
        # A browser always sends Origin on these; a plain client with the token may leave it out.
        streams = path in STREAM_PATHS
        if origin is not None and (path == "/ws" or streams or unsafe) and not self.origin_ok(origin, host):
            return Refusal(403, f"foreign Origin {origin[:100]!r}: only the dashboard's own page may do this")
        if method in UNSAFE_METHODS:
            mimetype = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if mimetype != "application/json":
                return Refusal(415, "a request that changes something must be sent as Content-Type: application/json")
        given = headers.get(TOKEN_HEADER)
        if path == "/ws" and given is None:
            given = ws_token(headers.get("Sec-WebSocket-Protocol", ""))
        if streams and method == "GET" and given is None:
            given = query_token  # EventSource and curl -N cannot always set a header; reading only
        if not self.token_ok(given):
            if given:
                return Refusal(401, "a wrong token")
            return Refusal(
                401,
                f"missing token: send it in the {TOKEN_HEADER} header (the page keeps the one from "
                "the address the launcher printed, ?token=...)",
            )
        return None


def ws_token(protocols: str) -> str | None:
    """The token offered as the subprotocol ``token.<token>``, if any."""
    for offered in protocols.split(","):
        offered = offered.strip()
        if offered.startswith(WS_TOKEN_PREFIX):
            return offered[len(WS_TOKEN_PREFIX) :]
    return None


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PAGE_CSP = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"
)
