"""Reaching an OpenAlgo server behind a reverse proxy (nginx): TLS and HTTP basic auth.

Owns ``ProxyAccess`` (the basic-auth credentials and the CA bundle an account is reached with),
how it is put on the REST requests (requests) and on the WebSocket handshake (websocket-client),
and how a reply that came from the proxy rather than from OpenAlgo is told apart and said in one
line (``proxy_refusal``): OpenAlgo answers every API call with a JSON object, its errors too, so a
401, 403 or 502/503/504 whose body is not one (nginx's HTML pages) is the proxy's.

Certificate verification is always on: ``ca_bundle`` names the CA certificates (PEM) to trust
instead of the default store (a private CA, a self-signed certificate); nothing turns checking
off. The password and the ``Authorization`` value appear in no repr; whoever builds a
``ProxyAccess`` registers ``secrets()`` with the log redactor.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

_GATEWAY = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP basic-auth credentials for the proxy; the password never shows in a repr."""

    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.user or ":" in self.user or not self.user.isprintable():
            raise ValueError("the basic-auth user must be non-empty, printable and without ':'")
        if not self.password or not self.password.isprintable():
            raise ValueError("the basic-auth password must be non-empty and printable")

    def header_value(self) -> str:
        """The ``Authorization`` header's value (UTF-8, as nginx compares it)."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


@dataclass(frozen=True, slots=True)
class ProxyAccess:
    """How one account's OpenAlgo is reached: basic auth (None: no proxy login) and the CA
    bundle ("" = the default trust store)."""

    basic_auth: BasicAuth | None = None
    ca_bundle: str = ""

    @property
    def verify(self) -> str | bool:
        """requests' ``verify``: the bundle, else True (never False)."""
        return self.ca_bundle or True

    def secrets(self) -> tuple[str, ...]:
        """What the log redactor must mask: the password and the header value."""
        auth = self.basic_auth
        if auth is None:
            return ()
        value = auth.header_value()
        return (auth.password, value, value.split(" ", 1)[1])

    def headers(self) -> dict[str, str]:
        """Headers every REST request carries."""
        return {"Authorization": self.basic_auth.header_value()} if self.basic_auth else {}

    def ws_options(self) -> dict[str, Any]:
        """Keyword arguments for ``websocket.create_connection``."""
        options: dict[str, Any] = {}
        if self.basic_auth is not None:
            options["header"] = [f"Authorization: {self.basic_auth.header_value()}"]
        if self.ca_bundle:
            options["sslopt"] = {"ca_certs": self.ca_bundle}
        return options

    def check_urls(self, *urls: str) -> None:
        """Refuse (``ValueError``) to send credentials in clear text: with basic auth, every URL
        must be https/wss unless it stays on this machine (loopback)."""
        if self.basic_auth is None:
            return
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme in ("https", "wss") or _loopback(parts.hostname or ""):
                continue
            raise ValueError(f"basic-auth credentials would travel in clear text to "
                             f"{parts.scheme}://{parts.hostname}: use https:// and wss:// URLs")

    def __repr__(self) -> str:
        who = f"basic auth as {self.basic_auth.user!r}" if self.basic_auth else "no basic auth"
        return f"ProxyAccess({who}, ca_bundle={self.ca_bundle or 'default'!r})"


def proxy_refusal(status: int, payload: object, access: ProxyAccess) -> str | None:
    """One line saying what the proxy refused, for a reply that is not OpenAlgo's (``payload``
    is its body parsed as JSON, None when it is not JSON); None for OpenAlgo's own replies and
    for statuses a proxy does not refuse with."""
    if isinstance(payload, dict):
        return None
    code = f"HTTP {status} {_phrase(status)}".rstrip()
    auth = access.basic_auth
    if status == 401 and auth is None:
        return (f"the proxy in front of OpenAlgo asks for basic-auth credentials ({code}) and "
                f"none are set")
    if status == 401:
        return (f"the proxy in front of OpenAlgo refused the basic-auth credentials of user "
                f"{auth.user!r} ({code}): check the user and the password")
    if status == 403:
        return (f"the proxy in front of OpenAlgo refused access ({code}, not OpenAlgo's reply): "
                f"check its allow/deny rules and the credentials")
    if status in _GATEWAY:
        return (f"the proxy in front of OpenAlgo got no answer from it ({code}): is OpenAlgo "
                f"running behind the proxy?")
    return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
