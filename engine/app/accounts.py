"""Broker accounts: their API keys encrypted at rest (Fernet), and the accounts the engine uses.

Owns everything that touches an account's API key, or the password of the proxy in front of its
OpenAlgo (HTTP basic auth), in clear text:

- ``KeyCipher``: Fernet encryption with the key from ``NIFTY_ENGINE_FERNET_KEY``. A missing key
  is a start-up error that says how to create one; it is never generated silently (stored keys
  would become undecryptable on the next start). A malformed key and a key other than the one
  the stored keys were encrypted with are clear errors too; no message ever holds a key.
- ``AccountVault`` over the engine ``Database`` (table ``accounts``): validated ``add`` (an
  upsert: adding an existing name replaces it), ``list`` without keys (at most a ``…abcd`` hint),
  ``remove``, ``api_key`` and ``set_notify`` (where the account's notices go: apprise URLs,
  which carry tokens, so encrypted like the key). Every key, password and URL it sees in clear
  text is handed to the log redactor. The proxy's password is encrypted like the key; its user
  name is stored in clear.
- ``AccountsSettings`` (section ``[accounts]``) and ``resolve_accounts``: the accounts a run
  trades on, with their decrypted keys. With no stored account, the single ``default`` account
  made of ``[openalgo].host``, ``[feed].ws_url`` and ``OPENALGO_API_KEY`` keeps working (its
  proxy login from ``NIFTY_ENGINE_BASIC_AUTH_USER`` / ``NIFTY_ENGINE_BASIC_AUTH_PASSWORD``).
- ``proxy_access``: the ``ProxyAccess`` (basic auth, ``[openalgo] ca_bundle``) a run reaches an
  account's OpenAlgo with, its secrets registered with the redactor.

Every error is an ``AccountError``, a ``ConfigError``: the CLI prints its one line and exits 2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from loguru import logger

from engine.config import ConfigError, Secrets
from engine.openalgo.access import BasicAuth, ProxyAccess
from engine.runtime.clock import Clock, fmt_ist
from engine.runtime.logs import REDACTOR
from engine.runtime.notify import notify_urls, redacted, unknown_urls
from engine.settings import setting
from engine.store.database import Applied, Database, Op, RowWrite, StoredAccount, record

if TYPE_CHECKING:
    from engine.config import Config

FERNET_ENV = "NIFTY_ENGINE_FERNET_KEY"
API_KEY_ENV = "OPENALGO_API_KEY"
BASIC_AUTH_USER_ENV = Secrets.ENV_NAMES["basic_auth_user"]
BASIC_AUTH_PASSWORD_ENV = Secrets.ENV_NAMES["basic_auth_password"]
GENERATE_KEY_COMMAND = ('python -c "from cryptography.fernet import Fernet; '
                        'print(Fernet.generate_key().decode())"')

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_HINT_CHARS = 4
_HINT_MIN_LENGTH = 16  # shorter keys get no hint: four characters would be too much of them


class Role(StrEnum):
    PRIMARY = "primary"
    BACKUP = "backup"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class AccountError(ConfigError):
    """Base of every account error; one line, never holding a key."""


class InvalidAccount(AccountError):
    """Bad input to ``add``: name, URL, role or API key; nothing was written."""


class AccountNotFound(AccountError):
    """No stored account has this name."""


class FernetKeyMissing(AccountError):
    """``NIFTY_ENGINE_FERNET_KEY`` is not set."""


class FernetKeyInvalid(AccountError):
    """``NIFTY_ENGINE_FERNET_KEY`` is not a Fernet key (32 url-safe base64-encoded bytes)."""


class WrongFernetKey(AccountError):
    """A stored API key cannot be decrypted: it was encrypted with another Fernet key."""


class NoAccounts(AccountError):
    """Nothing to trade on: no stored account and no ``OPENALGO_API_KEY``."""


# ---------------------------------------------------------------------------------------------
# Settings and values
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountsSettings:
    """Section ``[accounts]``: which stored accounts a run uses (add them with ``run.py
    accounts add``; their hosts and encrypted keys live in the engine database)."""

    use: tuple[str, ...] = setting((), "stored accounts the engine trades on, by name "
                                   "(empty: every stored account)")
    default_name: str = setting("default", "name of the single account made of [openalgo].host, "
                                "[feed].ws_url and OPENALGO_API_KEY when no account is stored")


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """A stored account as listed: no key, at most its last characters (``…abcd``)."""

    name: str
    host: str
    ws_url: str
    role: Role
    updated_ts: float
    key_hint: str  # "…abcd", "…" (a short key), or "" when it cannot be decrypted
    readable: bool  # False: no key stored, or encrypted with another Fernet key
    basic_auth_user: str | None = None  # the proxy login's user name (never its password)
    notify: int = 0  # how many notification URLs are stored (never the URLs)

    def line(self) -> str:
        key = f"key {self.key_hint}" if self.readable else "key UNREADABLE"
        proxy = f"  basic auth {self.basic_auth_user}" if self.basic_auth_user else ""
        notify = f"  notify {self.notify} URL(s)" if self.notify else ""
        return (f"{self.name:<16} {self.role:<8} {self.host}  {self.ws_url}  {key}{proxy}"
                f"{notify}  updated {fmt_ist(self.updated_ts, with_date=True)}")


@dataclass(frozen=True, slots=True)
class Account:
    """An account ready to use: where its OpenAlgo server is, its API key in clear text, and the
    proxy login in front of it (None: no proxy login)."""

    name: str
    host: str
    ws_url: str
    role: Role
    api_key: str = field(repr=False)
    basic_auth: BasicAuth | None = None
    notify_urls: str | None = field(default=None, repr=False)  # apprise URLs, space-separated


# ---------------------------------------------------------------------------------------------
# Encryption
# ---------------------------------------------------------------------------------------------


class KeyCipher:
    """Encrypts and decrypts API keys with one Fernet key; its repr never shows the key."""

    def __init__(self, fernet_key: str) -> None:
        try:
            self._fernet = Fernet(fernet_key.strip().encode())
        except (ValueError, UnicodeEncodeError):
            raise FernetKeyInvalid(
                f"{FERNET_ENV} is not a valid Fernet key (it must be 32 url-safe base64-encoded "
                f"bytes); create one with: {GENERATE_KEY_COMMAND}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KeyCipher:
        value = (env.get(FERNET_ENV) or "").strip()
        if not value:
            raise FernetKeyMissing(
                f"{FERNET_ENV} is not set: it encrypts the API keys stored in the database. "
                f"Create one with: {GENERATE_KEY_COMMAND} — then export it and keep it safe "
                f"(the stored keys cannot be read without it)")
        return cls(value)

    def encrypt(self, text: str) -> bytes:
        return self._fernet.encrypt(text.encode())

    def decrypt(self, token: bytes, account: str, what: str = "API key") -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise WrongFernetKey(
                f"the {what} of account {account!r} cannot be decrypted: the stored keys were "
                f"encrypted with another {FERNET_ENV} (or the row is damaged); set the key they "
                f"were stored with, or add the account again") from None

    def __repr__(self) -> str:
        return "KeyCipher(***)"


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidAccount(f"bad account name {name!r}: 1-32 letters, digits, '_' or '-', "
                             f"starting with a letter or digit")
    return name


def check_url(url: str, what: str, schemes: tuple[str, ...]) -> str:
    """``url`` if it is a plain ``scheme://host[:port][/path]`` URL of one of ``schemes``."""
    parts = urlsplit(url.strip())
    if parts.username is not None or parts.password is not None:
        # the URL is not repeated: its credentials would end up in a terminal or a log
        raise InvalidAccount(f"{what} must not contain credentials (user:password@)")
    if parts.scheme not in schemes or not parts.hostname:
        raise InvalidAccount(f"{what} must be a {'/'.join(schemes)} URL with a host, "
                             f"got {url!r}")
    if parts.query or parts.fragment:
        raise InvalidAccount(f"{what} must not have a query or fragment (keys go in the "
                             f"environment, not in URLs)")
    try:
        _ = parts.port
    except ValueError:
        raise InvalidAccount(f"{what} has a bad port: {url!r}") from None
    return url.strip().rstrip("/")


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidAccount(f"bad role {role!r}: use primary or backup") from None


def check_account(name: str, host: str, ws_url: str, role: str) -> tuple[str, str, str, Role]:
    """Everything of an account but its key, validated: (name, host, ws_url, role)."""
    return (check_name(name), check_url(host, "host", ("http", "https")),
            check_url(ws_url, "ws_url", ("ws", "wss")), check_role(role))


def check_api_key(api_key: str) -> str:
    key = api_key.strip()
    if not key:
        raise InvalidAccount("the API key is empty")
    if any(c.isspace() or not c.isprintable() for c in key):
        raise InvalidAccount("the API key contains spaces or control characters")
    return key


def check_basic_auth(user: str | None, password: str | None, where: str) -> BasicAuth | None:
    """The proxy login, or None when neither part is given; half of one is refused."""
    if not user and not password:
        return None
    if not user or not password:
        raise InvalidAccount(f"{where}: a basic-auth login needs both the user and the password")
    try:
        return BasicAuth(user.strip(), password.rstrip("\r\n"))
    except ValueError as exc:
        raise InvalidAccount(f"{where}: {exc}") from None


def env_basic_auth(env: Mapping[str, str]) -> BasicAuth | None:
    """The proxy login of ``NIFTY_ENGINE_BASIC_AUTH_USER`` / ``_PASSWORD`` (None if unset)."""
    return check_basic_auth(env.get(BASIC_AUTH_USER_ENV), env.get(BASIC_AUTH_PASSWORD_ENV),
                            f"{BASIC_AUTH_USER_ENV} / {BASIC_AUTH_PASSWORD_ENV}")


def proxy_access(cfg: Config, basic_auth: BasicAuth | None, *urls: str) -> ProxyAccess:
    """How ``urls`` are reached: ``basic_auth`` and ``[openalgo] ca_bundle``. Credentials are
    never sent in clear text to another machine; the password and the header value are
    registered with the log redactor."""
    return _checked(ProxyAccess(basic_auth, cfg.section("openalgo").ca_bundle), urls)


def _checked(access: ProxyAccess, urls: tuple[str, ...]) -> ProxyAccess:
    try:
        access.check_urls(*urls)
    except ValueError as exc:
        raise InvalidAccount(str(exc)) from None
    REDACTOR.add(*access.secrets())
    return access


def key_hint(api_key: str) -> str:
    """At most the last four characters, and only of a long key: ``…abcd``."""
    return "…" + (api_key[-_HINT_CHARS:] if len(api_key) >= _HINT_MIN_LENGTH else "")


# ---------------------------------------------------------------------------------------------
# The vault
# ---------------------------------------------------------------------------------------------


class AccountVault:
    """The stored accounts of one engine database; keys go in and out only through ``cipher``."""

    def __init__(self, db: Database, cipher: KeyCipher, clock: Clock) -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock

    def add(self, name: str, host: str, ws_url: str, role: str, api_key: str,
            basic_auth: BasicAuth | None = None) -> bool:
        """Store an account (validated, key and proxy password encrypted); True if new, False if
        it replaced one.

        Refused with ``WrongFernetKey`` while another stored account's key cannot be decrypted
        with this cipher: one database never mixes keys encrypted with different Fernet keys.
        """
        name, host, ws_url, checked_role = check_account(name, host, ws_url, role)
        key = check_api_key(api_key)
        REDACTOR.add(key)
        _checked(ProxyAccess(basic_auth), (host, ws_url))  # the rule a run applies
        stored = self._db.accounts()
        for other in stored:
            if other.name != name and other.api_key_encrypted is not None:
                self._decrypt(other)
        before = next((s for s in stored if s.name == name), None)
        row = StoredAccount(name=name, host=host, ws_url=ws_url, role=checked_role.value,
                            updated_ts=self._clock.time(),
                            api_key_encrypted=self._cipher.encrypt(key),
                            basic_auth_user=basic_auth.user if basic_auth else None,
                            basic_auth_encrypted=self._cipher.encrypt(basic_auth.password)
                            if basic_auth else None,
                            # its notification URLs stay (set_notify changes them)
                            notify_encrypted=before.notify_encrypted if before else None)
        self._db.run_write(lambda tx: tx.apply(self._db.writes_for(record(row))))
        created = all(s.name != name for s in stored)
        logger.info("accounts: {} {} ({}, {}, {}{})", "added" if created else "updated", name,
                    checked_role.value, host, ws_url,
                    f", basic auth as {basic_auth.user}" if basic_auth else "")
        return created

    def list(self) -> list[AccountInfo]:
        """Every stored account by name, without keys (see ``AccountInfo.readable``)."""
        out: list[AccountInfo] = []
        for row in self._db.accounts():
            hint, readable, notify = "", False, 0
            if row.api_key_encrypted is not None:
                try:
                    hint, readable = key_hint(self._decrypt(row)), True
                    notify = len(notify_urls(_notify_text(row, self._cipher)))
                except WrongFernetKey:
                    pass
            out.append(AccountInfo(row.name, row.host, row.ws_url, Role(row.role),
                                   row.updated_ts, hint, readable, row.basic_auth_user, notify))
        return out

    def set_notify(self, name: str, urls: str | None) -> int:
        """Store where ``name``'s notices go: the apprise URLs in ``urls`` (separated by spaces,
        commas or newlines), encrypted, replacing what was stored; empty clears them. Each URL
        must be one apprise can use. Returns how many are stored."""
        row = self._row(name)
        self._decrypt(row)  # one Fernet key per database: the API key's
        found = notify_urls(urls)  # registered with the redactor
        bad = unknown_urls(found)
        if bad:
            raise InvalidAccount(f"not a notification URL apprise can use: "
                                 f"{', '.join(map(redacted, bad))} (see "
                                 f"https://github.com/caronc/apprise/wiki)")
        text = " ".join(dict.fromkeys(found))
        new = replace(row, updated_ts=self._clock.time(),
                      notify_encrypted=self._cipher.encrypt(text) if text else None)
        self._db.run_write(lambda tx: tx.apply(self._db.writes_for(record(new))))
        count = len(dict.fromkeys(found))
        logger.info("accounts: {} sends its notices to {} URL(s){}", name, count,
                    f": {', '.join(map(redacted, found))}" if found else "")
        return count

    def remove(self, name: str) -> None:
        delete = RowWrite("accounts", Op.DELETE, {"name": name}, ("name",))
        if self._db.run_write(lambda tx: tx.apply((delete,))) is Applied.MISSING:
            raise AccountNotFound(f"no account named {name!r}")
        logger.info("accounts: removed {}", name)

    def api_key(self, name: str) -> str:
        return self._decrypt(self._row(name))

    def _row(self, name: str) -> StoredAccount:
        for row in self._db.accounts():
            if row.name == name:
                return row
        raise AccountNotFound(f"no account named {name!r}")

    def _decrypt(self, row: StoredAccount) -> str:
        return _decrypt(row, self._cipher)


def _decrypt(row: StoredAccount, cipher: KeyCipher) -> str:
    """The row's API key in clear text, registered with the log redactor."""
    if row.api_key_encrypted is None:
        raise WrongFernetKey(f"account {row.name!r} has no API key stored; add it again")
    key = cipher.decrypt(row.api_key_encrypted, row.name)
    REDACTOR.add(key)
    return key


def _notify_text(row: StoredAccount, cipher: KeyCipher) -> str:
    """The row's notification URLs in clear text ("" when none are stored)."""
    if row.notify_encrypted is None:
        return ""
    return cipher.decrypt(row.notify_encrypted, row.name, "notification URLs")


def _account(row: StoredAccount, cipher: KeyCipher) -> Account:
    basic_auth = None
    if row.basic_auth_user and row.basic_auth_encrypted is not None:
        password = cipher.decrypt(row.basic_auth_encrypted, row.name)
        basic_auth = BasicAuth(row.basic_auth_user, password)
        REDACTOR.add(*ProxyAccess(basic_auth).secrets())
    urls = " ".join(notify_urls(_notify_text(row, cipher)))  # registered with the redactor
    return Account(row.name, row.host, row.ws_url, Role(row.role), _decrypt(row, cipher),
                   basic_auth, urls or None)


# ---------------------------------------------------------------------------------------------
# The accounts a run uses
# ---------------------------------------------------------------------------------------------


def resolve_accounts(cfg: Config, db: Database | None, env: Mapping[str, str]) -> list[Account]:
    """The accounts to trade on, keys decrypted, in name order; at least one is primary.

    Stored accounts (none without a database) win (``[accounts].use`` picks among them); they
    need ``NIFTY_ENGINE_FERNET_KEY``. With none stored, ``OPENALGO_API_KEY`` makes the single
    primary account ``[accounts].default_name`` on ``[openalgo].host`` and ``[feed].ws_url``.
    """
    settings: AccountsSettings = cfg.section("accounts")
    rows = db.accounts() if db is not None else []
    names = [row.name for row in rows]
    if not names:
        return [_default_account(cfg, settings, env)]
    cipher = KeyCipher.from_env(env)
    unknown = sorted(set(settings.use) - set(names))
    if unknown:
        raise AccountNotFound(f"accounts.use names {', '.join(unknown)}, not stored; stored: "
                              f"{', '.join(names)}")
    chosen = [n for n in names if not settings.use or n in settings.use]
    accounts = [_account(row, cipher) for row in rows if row.name in chosen]
    if not any(a.role is Role.PRIMARY for a in accounts):
        raise NoAccounts(f"no primary account among {', '.join(chosen)}; add one with "
                         f"--role primary")
    unused = [name for name in (API_KEY_ENV, BASIC_AUTH_USER_ENV) if env.get(name)]
    if unused:
        logger.info("accounts: using stored accounts {}; {} not used", chosen,
                    " and ".join(unused))
    return accounts


def _default_account(cfg: Config, settings: AccountsSettings,
                     env: Mapping[str, str]) -> Account:
    api_key = env.get(API_KEY_ENV, "")
    if not api_key.strip():
        raise NoAccounts(f"no account: add one with 'run.py accounts add NAME --host URL "
                         f"--ws-url URL', or set {API_KEY_ENV} for the single account on "
                         f"[openalgo].host")
    extra = sorted(set(settings.use) - {settings.default_name})
    if extra:
        raise AccountNotFound(f"accounts.use names {', '.join(extra)}, but no account is stored")
    key = check_api_key(api_key)
    REDACTOR.add(key)
    return Account(check_name(settings.default_name),
                   check_url(cfg.section("openalgo").host, "openalgo.host", ("http", "https")),
                   check_url(cfg.section("feed").ws_url, "feed.ws_url", ("ws", "wss")),
                   Role.PRIMARY, key, env_basic_auth(env))
