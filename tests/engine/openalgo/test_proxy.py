"""The OpenAlgo clients behind a real nginx, as production runs OpenAlgo: ``https://host`` for
REST and ``wss://host/ws`` for the WebSocket, TLS with a certificate made here, HTTP basic auth.
What the proxy refuses is one line, told apart from OpenAlgo's own replies; certificate
verification is always on; the password and the Authorization header never reach a log."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from engine.broker import (
    AuthError,
    BrokerUnavailable,
    OutcomeUnknown,
    ProxyAuthError,
    UntrustedServer,
)
from engine.messages import Tick
from engine.openalgo.access import BasicAuth, ProxyAccess
from engine.openalgo.feed import FeedClient
from engine.openalgo.rest import OpenAlgoClient, RestSettings
from engine.runtime.clock import VirtualClock
from engine.sim.server import SimulatorServer
from tests.engine.openalgo.conftest import API_KEY, SYMBOLS
from tests.engine.openalgo.test_feed import Recorder, feed_settings, pump
from tests.engine.openalgo.test_rest import SleepRecorder
from tests.engine.proxy import Nginx, Tls, make_tls

USER = "trader"
PASSWORD = "nginx-pass-5b0c2e91d4"
SYM = SYMBOLS[0]


def port(url: str) -> int:
    return int(urlsplit(url).port or 0)


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path / "tls")


@pytest.fixture
def nginx(sim: SimulatorServer, tls: Tls, tmp_path: Path) -> Iterator[Nginx]:
    proxy = Nginx(tmp_path / "nginx", rest_port=port(sim.rest_url), ws_port=port(sim.ws_url),
                  tls=tls, user=USER, password=PASSWORD).start()
    yield proxy
    proxy.stop()


def access(tls: Tls | None, password: str | None = PASSWORD) -> ProxyAccess:
    return ProxyAccess(BasicAuth(USER, password) if password else None,
                       str(tls.ca) if tls else "")


def client(url: str, sleeps: Callable[[float], None], proxy: ProxyAccess, *,
           key: str = API_KEY) -> OpenAlgoClient:
    return OpenAlgoClient(RestSettings(host=url, timeout_s=5.0, retry_delay_s=0.01),
                          api_key=key, clock=VirtualClock(1_700_000_000.0), account="remote",
                          sleep=sleeps, access=proxy)


def test_rest_through_nginx_places_an_order_and_reads_its_fill(
        nginx: Nginx, tls: Tls, sim: SimulatorServer, publish: Callable[..., Tick]) -> None:
    publish(SYM, 100.0)
    rest = client(nginx.url, SleepRecorder(), access(tls))
    assert rest.ping()
    oid = rest.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="SELL",
                           quantity=65)
    row = rest.order_status(strategy="t1", orderid=oid)
    assert (row.status, row.filled_quantity) == ("complete", 65)
    assert sim.rest_calls("placeorder") == 1
    assert '"POST /api/v1/placeorder HTTP/1.1" 200' in (nginx.prefix / "access.log").read_text()


def test_the_proxy_refusals_are_one_line_and_not_openalgo_s(nginx: Nginx, tls: Tls,
                                                            sim: SimulatorServer) -> None:
    sleeps = SleepRecorder()
    with pytest.raises(ProxyAuthError) as none_set:
        client(nginx.url, sleeps, access(tls, password=None)).funds()
    assert none_set.value.status == 401
    assert "proxy in front of OpenAlgo asks for basic-auth credentials (HTTP 401 " \
        "Unauthorized) and none are set" in str(none_set.value)
    with pytest.raises(ProxyAuthError) as wrong:
        client(nginx.url, sleeps, access(tls, password="not-the-password")).funds()
    assert "refused the basic-auth credentials of user 'trader' (HTTP 401 Unauthorized)" in \
        str(wrong.value)
    assert "\n" not in str(wrong.value) and "<html>" not in str(wrong.value)
    # OpenAlgo's own refusal of the API key, through the same proxy, stays OpenAlgo's
    with pytest.raises(AuthError) as key:
        client(nginx.url, sleeps, access(tls), key="not-the-key-00000000").funds()
    assert not isinstance(key.value, ProxyAuthError) and key.value.status == 403
    assert "API key refused" in str(key.value) and "proxy" not in str(key.value)
    assert sleeps.waits == []  # no refusal is retried
    assert sim.rest_calls("funds") == 1  # only the right login reached OpenAlgo


def test_a_proxy_without_openalgo_behind_it_says_so(nginx: Nginx, tls: Tls) -> None:
    sleeps = SleepRecorder()
    dead = client(nginx.dead_url, sleeps, access(tls))
    with pytest.raises(BrokerUnavailable) as read:
        dead.funds()
    assert "got no answer from it (HTTP 502 Bad Gateway)" in str(read.value)
    assert len(sleeps.waits) == 2  # retried like any 5xx
    with pytest.raises(OutcomeUnknown) as order:
        dead.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="SELL", quantity=65)
    assert "HTTP 502" in str(order.value) and len(sleeps.waits) == 2  # never re-sent


def test_certificate_verification_is_always_on(nginx: Nginx, sim: SimulatorServer,
                                               tmp_path: Path) -> None:
    sleeps = SleepRecorder()
    with pytest.raises(UntrustedServer) as untrusted:  # no CA bundle: the default store
        client(nginx.url, sleeps, access(None)).place_order(
            strategy="t1", symbol=SYM, exchange="NFO", action="SELL", quantity=65)
    assert "TLS certificate was refused (unable to get local issuer certificate)" in \
        str(untrusted.value)
    assert "[openalgo] ca_bundle" in str(untrusted.value)
    assert len(sleeps.waits) == 2  # never sent, so safely retried (even an order)
    other = make_tls(tmp_path / "other")  # a CA that did not sign the server's certificate
    with pytest.raises(UntrustedServer):
        client(nginx.url, sleeps, access(other)).funds()
    assert sim.rest_calls("placeorder") == sim.rest_calls("funds") == 0


def feed(url: str, rec: Recorder, proxy: ProxyAccess) -> FeedClient:
    return FeedClient(feed_settings(url, auth_retry_s=5.0), api_key=API_KEY,
                      clock=VirtualClock(1_800_000_000.0), account="remote",
                      on_tick=rec.on_tick, on_status=rec.on_status,
                      on_auth_error=rec.on_auth_error, access=proxy)


def test_the_feed_through_nginx_on_a_path(nginx: Nginx, tls: Tls,
                                          publish: Callable[..., Tick]) -> None:
    rec = Recorder()
    client_ = feed(nginx.ws_url, rec, access(tls))
    client_.subscribe([(SYM, "NFO")])
    client_.start()
    try:
        assert pump(publish, [SYM], lambda: bool(rec.ticks), timeout=10)
        assert rec.ticks[0].symbol == SYM and "connected" in rec.states()
    finally:
        client_.stop()
    assert "GET /ws HTTP/1.1\" 101" in (nginx.prefix / "access.log").read_text()


@pytest.mark.parametrize(("password", "ca", "state", "reason"), [
    ("wrong-password", True, "auth_failed", "refused the basic-auth credentials of user"),
    (PASSWORD, False, "reconnecting", "CERTIFICATE_VERIFY_FAILED"),
])
def test_the_feed_refused_by_the_proxy(nginx: Nginx, tls: Tls, password: str, ca: bool,
                                       state: str, reason: str) -> None:
    rec = Recorder()
    client_ = feed(nginx.ws_url, rec, access(tls if ca else None, password))
    client_.start()
    try:
        assert rec.wait(lambda: any(s.state == state for _, s in rec.statuses), timeout=10)
    finally:
        client_.stop()
    status = next(s for _, s in rec.statuses if s.state == state)
    assert reason in status.reason
    if state == "auth_failed":
        (error,) = rec.auth_errors
        assert isinstance(error, ProxyAuthError) and error.status == 401
    assert client_.stats().ticks == 0


def test_the_password_and_the_header_never_reach_a_log(nginx: Nginx, tls: Tls,
                                                       log_capture: io.StringIO) -> None:
    from engine.runtime.logs import REDACTOR

    proxy = access(tls, password="wrong-" + PASSWORD)
    REDACTOR.add(*proxy.secrets())  # what the application does when it builds the access
    header = proxy.headers()["Authorization"]
    sleeps = SleepRecorder()
    rest = client(nginx.url, sleeps, proxy)
    with pytest.raises(ProxyAuthError) as err:
        rest.funds()
    from loguru import logger

    logger.error("for the record: {} {} {!r}", header, proxy.basic_auth, proxy)
    text = log_capture.getvalue() + str(err.value) + repr(proxy) + repr(rest)
    assert "wrong-" + PASSWORD not in text and header.split()[1] not in text
    assert "openalgo[remote] funds" in text  # the request log is there, redacted


def test_credentials_never_travel_in_clear_text() -> None:
    proxy = ProxyAccess(BasicAuth(USER, PASSWORD))
    proxy.check_urls("https://openalgo.example", "wss://openalgo.example/ws",
                     "http://127.0.0.1:5000", "ws://localhost:8765")
    with pytest.raises(ValueError, match=r"clear text to http://openalgo\.example"):
        proxy.check_urls("http://openalgo.example")
    ProxyAccess().check_urls("http://openalgo.example")  # nothing to leak without a login
    with pytest.raises(ValueError, match="':'"):
        BasicAuth("a:b", PASSWORD)


def test_without_nginx_the_test_skips_saying_why_but_never_under_ci(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.engine import proxy as support

    monkeypatch.setattr(support.shutil, "which", lambda _name: None)
    monkeypatch.setattr(support, "NGINX_PLACES", ())
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no nginx .*apt-get install nginx"):
        support.nginx_or_skip()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        support.nginx_or_skip()
