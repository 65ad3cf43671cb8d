"""Where an engine trades: the user's OpenAlgo server, or a standalone simulator to attach to.

Owns ``Venue`` (URLs, API key, account, the clock to run on, the proxy access) and how each is
found:
``live_venue`` (a stored account with its Fernet-encrypted key, or ``[openalgo] host``,
``[feed] ws_url`` and ``OPENALGO_API_KEY``) and ``attached_venue`` (the ``simulator.json`` a
standalone ``run.py simulator`` writes into the state directory: its URLs and its market clock,
so every engine that attaches, and every restart of one, runs on the simulator's market time;
its proxy login, if it sits behind one, comes from the environment).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import Config, ConfigError
from engine.openalgo.access import ProxyAccess
from engine.runtime.clock import Clock, ScaledClock, WallClock
from engine.runtime.fastforward import FastForwardClock

SIM_FILE = "simulator.json"


@dataclass(frozen=True, slots=True)
class Venue:
    """Where the engine trades: the server's URLs, the API key, the clock to run on, and how the
    server is reached (basic auth and CA bundle of a proxy in front of it)."""

    name: str  # "live" | "paper"
    rest_url: str
    ws_url: str
    api_key: str
    clock: Clock
    account: str
    access: ProxyAccess = field(default_factory=ProxyAccess)
    # the account's stored apprise URLs (space-separated), added to NIFTY_ENGINE_NOTIFY_URLS
    notify_urls: str | None = field(default=None, repr=False)


def live_venue(cfg: Config, account: str | None = None) -> Venue:
    """The user's OpenAlgo server for ``account`` (a stored account, keys decrypted; or the
    single account of ``[openalgo]`` + ``OPENALGO_API_KEY``). A strategy is mirrored on several
    accounts by running one engine per account (``--account``): each has its own order manager,
    rate limit, database and control socket, and one account's failure cannot stop another."""
    from engine.app.accounts import Role, proxy_access, resolve_accounts
    from engine.store.database import Database

    path = Path(cfg.store.path)
    if path.exists():
        with Database(path, cfg.store) as db:
            accounts = resolve_accounts(cfg, db, os.environ)
    else:  # no database yet, so no stored account
        accounts = resolve_accounts(cfg, None, os.environ)
    if account is not None:
        chosen = [a for a in accounts if a.name == account]
        if not chosen:
            raise ConfigError(f"no account {account!r}; known: "
                              f"{', '.join(a.name for a in accounts)}", key="live.account")
    else:
        chosen = [a for a in accounts if a.role is Role.PRIMARY]
        if len(chosen) > 1:
            names = ", ".join(a.name for a in chosen)
            raise ConfigError(f"{len(chosen)} primary accounts ({names}): run one engine per "
                              f"account (run.py live --account NAME)", key="live.account")
    a = chosen[0]
    return Venue("live", a.host, a.ws_url, a.api_key, WallClock(), a.name,
                 proxy_access(cfg, a.basic_auth, a.host, a.ws_url), a.notify_urls)


def write_simulator_file(state_dir: Path, *, rest_url: str, ws_url: str, clock: Clock) -> Path:
    """What a standalone simulator publishes for engines that attach (no secret in it)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SIM_FILE
    facts: dict[str, object] = {"rest_url": rest_url, "ws_url": ws_url,
                                "market_ts": clock.time(), "wall_ts": time.time(),
                                "speed": clock.speed, "pid": os.getpid()}
    if isinstance(clock, FastForwardClock):  # nights skipped: attached engines skip them too
        facts |= {"base_ts": clock.base_time(), "skips": clock.skips}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(facts))
    tmp.replace(path)
    return path


def attached_venue(cfg: Config, state_dir: Path) -> Venue:
    """The simulator described in ``<state_dir>/simulator.json``, on its market clock."""
    path = state_dir / SIM_FILE
    try:
        facts = json.loads(path.read_text())
        speed = float(facts["speed"])
        elapsed = (time.time() - float(facts["wall_ts"])) * speed
        market = float(facts["market_ts"]) + elapsed
        rest_url, ws_url = str(facts["rest_url"]), str(facts["ws_url"])
        skips = [(float(a), float(b)) for a, b in facts.get("skips") or ()]
        base = float(facts.get("base_ts", facts["market_ts"])) + elapsed
    except FileNotFoundError:
        raise ConfigError(f"no simulator to attach to: {path} does not exist (start "
                          f"`run.py simulator` first)", key="paper.attach") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a simulator file ({exc})", key="paper.attach") \
            from None
    key = cfg.secrets.openalgo_api_key
    key_file = state_dir / "simulator.key"
    if not key and key_file.exists():
        key = key_file.read_text().strip()
    if not key:
        raise ConfigError("no API key for the simulator: set OPENALGO_API_KEY or start the "
                          "simulator without it (it then writes simulator.key)",
                          key="openalgo_api_key")
    from engine.app.accounts import env_basic_auth, proxy_access

    access = proxy_access(cfg, env_basic_auth(os.environ), rest_url, ws_url)
    clock = FastForwardClock(base, speed, skips, base=True) if skips else \
        ScaledClock(market, speed)
    return Venue("paper", rest_url, ws_url, key, clock, "paper", access)
