"""Accounts: API keys encrypted at rest, validation, the accounts a run uses, and the CLI."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from loguru import logger

from engine.app.accounts import (
    FERNET_ENV,
    GENERATE_KEY_COMMAND,
    Account,
    AccountNotFound,
    AccountsSettings,
    AccountVault,
    FernetKeyInvalid,
    FernetKeyMissing,
    InvalidAccount,
    KeyCipher,
    NoAccounts,
    Role,
    WrongFernetKey,
    resolve_accounts,
)
from engine.app.sections import load_config
from engine.config import Config, ConfigError
from engine.openalgo.access import BasicAuth
from engine.runtime.clock import VirtualClock
from engine.store.database import Database
from tests.support import JsonHook

ROOT = Path(__file__).resolve().parents[3]
KEY_MAIN = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0main"
KEY_BACKUP = "f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1back"
HOST = "http://127.0.0.1:5000"
WS = "ws://127.0.0.1:8765"


def new_fernet_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def fernet_key() -> str:
    return new_fernet_key()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with Database(tmp_path / "engine.db") as database:
        yield database


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(1_757_000_000.0)


@pytest.fixture
def vault(db: Database, fernet_key: str, clock: VirtualClock) -> AccountVault:
    return AccountVault(db, KeyCipher(fernet_key), clock)


def raw_bytes(db_path: Path) -> bytes:
    """The database file, its WAL and shared-memory file, as stored on disk."""
    out = b""
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db_path}{suffix}")
        if path.exists():
            with open(path, "rb") as fh:
                out += fh.read()
    return out


# ---------------------------------------------------------------------------------------------
# The vault
# ---------------------------------------------------------------------------------------------


def test_add_list_remove_round_trip(vault: AccountVault) -> None:
    assert vault.add("main", HOST, WS, "primary", KEY_MAIN) is True
    assert vault.add("bk", "https://backup.example:8443/", "wss://backup.example/ws", "backup",
                     KEY_BACKUP) is True

    infos = vault.list()
    assert [(i.name, i.role, i.host, i.ws_url, i.key_hint, i.readable) for i in infos] == [
        ("bk", Role.BACKUP, "https://backup.example:8443", "wss://backup.example/ws", "…back",
         True),
        ("main", Role.PRIMARY, HOST, WS, "…main", True),
    ]
    assert vault.api_key("main") == KEY_MAIN
    assert vault.api_key("bk") == KEY_BACKUP
    assert KEY_MAIN not in repr(infos) and KEY_MAIN not in infos[1].line()

    vault.remove("bk")
    assert [i.name for i in vault.list()] == ["main"]
    with pytest.raises(AccountNotFound, match="'bk'"):
        vault.remove("bk")
    with pytest.raises(AccountNotFound):
        vault.api_key("bk")


def test_adding_an_existing_name_updates_it(vault: AccountVault, clock: VirtualClock) -> None:
    vault.add("main", HOST, WS, "primary", KEY_MAIN)
    clock.set_time(clock.time() + 60)
    assert vault.add("main", "https://new.example", "wss://new.example/ws", "backup",
                     KEY_BACKUP) is False
    (info,) = vault.list()
    assert (info.host, info.ws_url, info.role) == ("https://new.example", "wss://new.example/ws",
                                                   Role.BACKUP)
    assert info.updated_ts == clock.time()
    assert vault.api_key("main") == KEY_BACKUP


def test_the_database_files_never_hold_the_key(vault: AccountVault, db: Database,
                                               fernet_key: str) -> None:
    vault.add("main", HOST, WS, "primary", KEY_MAIN)
    vault.add("bk", HOST, WS, "backup", KEY_BACKUP)
    stored = raw_bytes(db.path)
    assert b"127.0.0.1:5000" in stored  # the files read do hold the rows
    assert KEY_MAIN.encode() not in stored and KEY_BACKUP.encode() not in stored
    assert fernet_key.encode() not in stored
    (row,) = [r for r in db.accounts() if r.name == "main"]
    assert row.api_key_encrypted is not None
    assert Fernet(fernet_key.encode()).decrypt(row.api_key_encrypted).decode() == KEY_MAIN
    assert KEY_MAIN not in repr(row)


@pytest.mark.parametrize(("name", "host", "ws_url", "role", "key", "expected"), [
    ("bad name", HOST, WS, "primary", KEY_MAIN, "bad account name"),
    ("", HOST, WS, "primary", KEY_MAIN, "bad account name"),
    ("x" * 33, HOST, WS, "primary", KEY_MAIN, "bad account name"),
    ("main", "ftp://127.0.0.1", WS, "primary", KEY_MAIN, "host must be a http/https URL"),
    ("main", "127.0.0.1:5000", WS, "primary", KEY_MAIN, "host must be a http/https URL"),
    ("main", "http://", WS, "primary", KEY_MAIN, "host must be a http/https URL"),
    ("main", "http://127.0.0.1:99999", WS, "primary", KEY_MAIN, "bad port"),
    ("main", f"http://u:{KEY_MAIN}@h", WS, "primary", KEY_MAIN, "must not contain credentials"),
    ("main", f"http://h/?apikey={KEY_MAIN}", WS, "primary", KEY_MAIN, "query or fragment"),
    ("main", HOST, "http://127.0.0.1:8765", "primary", KEY_MAIN, "ws_url must be a ws/wss"),
    ("main", HOST, WS, "leader", KEY_MAIN, "bad role"),
    ("main", HOST, WS, "primary", "", "the API key is empty"),
    ("main", HOST, WS, "primary", "  \n", "the API key is empty"),
    ("main", HOST, WS, "primary", "abc def-secret", "spaces or control characters"),
])
def test_bad_input_is_refused_and_nothing_is_written(
        vault: AccountVault, db: Database, name: str, host: str, ws_url: str, role: str,
        key: str, expected: str) -> None:
    with pytest.raises(InvalidAccount, match=expected) as caught:
        vault.add(name, host, ws_url, role, key)
    assert isinstance(caught.value, ConfigError)
    assert KEY_MAIN not in str(caught.value) and "def-secret" not in str(caught.value)
    assert db.accounts() == []


def test_a_key_read_from_a_file_loses_its_newline(vault: AccountVault) -> None:
    vault.add("main", HOST, WS, "primary", KEY_MAIN + "\n")
    assert vault.api_key("main") == KEY_MAIN


def test_missing_fernet_key_says_which_variable_and_how_to_make_one() -> None:
    with pytest.raises(FernetKeyMissing) as caught:
        KeyCipher.from_env({FERNET_ENV: "  "})
    message = str(caught.value)
    assert FERNET_ENV in message and GENERATE_KEY_COMMAND in message
    assert "\n" not in message
    with pytest.raises(FernetKeyMissing):
        KeyCipher.from_env({})


@pytest.mark.parametrize("bad", ["not-a-key", "x" * 44, new_fernet_key()[:-4], "ключ"])
def test_a_malformed_fernet_key_is_a_clear_error_without_the_key(bad: str) -> None:
    with pytest.raises(FernetKeyInvalid, match="not a valid Fernet key") as caught:
        KeyCipher.from_env({FERNET_ENV: bad})
    assert bad not in str(caught.value)


def test_a_wrong_fernet_key_is_a_clear_error(db: Database, clock: VirtualClock,
                                             fernet_key: str) -> None:
    AccountVault(db, KeyCipher(fernet_key), clock).add("main", HOST, WS, "primary", KEY_MAIN)
    other_key = new_fernet_key()
    other = AccountVault(db, KeyCipher(other_key), clock)

    with pytest.raises(WrongFernetKey, match="encrypted with another") as caught:
        other.api_key("main")
    message = str(caught.value)
    for secret in (KEY_MAIN, fernet_key, other_key):
        assert secret not in message
    (info,) = other.list()
    assert (info.name, info.readable, info.key_hint) == ("main", False, "")
    assert "UNREADABLE" in info.line()

    # a second account would mix two Fernet keys in one database: refused, nothing written
    with pytest.raises(WrongFernetKey):
        other.add("bk", HOST, WS, "backup", KEY_BACKUP)
    assert [r.name for r in db.accounts()] == ["main"]
    # re-adding the unreadable account itself is how it is repaired
    assert other.add("main", HOST, WS, "primary", KEY_MAIN) is False
    assert other.api_key("main") == KEY_MAIN


def test_reprs_never_show_keys(fernet_key: str) -> None:
    account = Account("main", HOST, WS, Role.PRIMARY, KEY_MAIN)
    assert KEY_MAIN not in repr(account) and KEY_MAIN not in str(account)
    assert fernet_key not in repr(KeyCipher(fernet_key))


def test_keys_seen_in_clear_text_are_masked_in_logs(db: Database, clock: VirtualClock,
                                                    fernet_key: str,
                                                    log_capture: io.StringIO) -> None:
    AccountVault(db, KeyCipher(fernet_key), clock).add("main", HOST, WS, "primary", KEY_MAIN)
    key = AccountVault(db, KeyCipher(fernet_key), clock).api_key("main")
    logger.warning("careless code logging {}", key)  # the redactor knows every key it handled
    text = log_capture.getvalue()
    assert "accounts: added main" in text and "careless code logging ***" in text
    assert KEY_MAIN not in text


# ---------------------------------------------------------------------------------------------
# The accounts a run uses
# ---------------------------------------------------------------------------------------------


def make_cfg(**accounts: object) -> Config:
    cfg = load_config(None, env={}, overrides={"openalgo.host": "http://10.0.0.5:5000",
                                               "feed.ws_url": "ws://10.0.0.5:8765"})
    return cfg.replace(accounts=AccountsSettings(**accounts))  # type: ignore[arg-type]


def test_without_stored_accounts_the_environment_key_makes_the_default_account(
        db: Database) -> None:
    (account,) = resolve_accounts(make_cfg(), db, {"OPENALGO_API_KEY": KEY_MAIN})
    assert account == Account("default", "http://10.0.0.5:5000", "ws://10.0.0.5:8765",
                              Role.PRIMARY, KEY_MAIN)
    with pytest.raises(NoAccounts, match=r"run\.py accounts add"):
        resolve_accounts(make_cfg(), db, {})
    with pytest.raises(AccountNotFound, match="other"):
        resolve_accounts(make_cfg(use=("other",)), db, {"OPENALGO_API_KEY": KEY_MAIN})


def test_the_default_account_takes_its_proxy_login_from_the_environment(
        db: Database) -> None:
    login = {"OPENALGO_API_KEY": KEY_MAIN, "NIFTY_ENGINE_BASIC_AUTH_USER": "trader",
             "NIFTY_ENGINE_BASIC_AUTH_PASSWORD": "proxy-pass-1f2e3d4c"}
    (account,) = resolve_accounts(make_cfg(), db, login)
    assert account.basic_auth == BasicAuth("trader", "proxy-pass-1f2e3d4c")
    assert "proxy-pass" not in repr(account)
    (plain,) = resolve_accounts(make_cfg(), db, {"OPENALGO_API_KEY": KEY_MAIN})
    assert plain.basic_auth is None
    for half in ("NIFTY_ENGINE_BASIC_AUTH_USER", "NIFTY_ENGINE_BASIC_AUTH_PASSWORD"):
        with pytest.raises(InvalidAccount, match="needs both the user and the password"):
            resolve_accounts(make_cfg(), db, {k: v for k, v in login.items() if k != half})


def test_stored_accounts_are_used_with_their_decrypted_keys(vault: AccountVault, db: Database,
                                                            fernet_key: str) -> None:
    vault.add("main", HOST, WS, "primary", KEY_MAIN)
    vault.add("bk", "https://b.example", "wss://b.example", "backup", KEY_BACKUP)
    env = {FERNET_ENV: fernet_key, "OPENALGO_API_KEY": "ignored-when-accounts-are-stored"}

    accounts = resolve_accounts(make_cfg(), db, env)
    assert [(a.name, a.role, a.api_key) for a in accounts] == [
        ("bk", Role.BACKUP, KEY_BACKUP), ("main", Role.PRIMARY, KEY_MAIN)]
    assert [a.name for a in resolve_accounts(make_cfg(use=("main",)), db, env)] == ["main"]

    with pytest.raises(AccountNotFound, match="nope"):
        resolve_accounts(make_cfg(use=("main", "nope")), db, env)
    with pytest.raises(NoAccounts, match="no primary account"):
        resolve_accounts(make_cfg(use=("bk",)), db, env)
    with pytest.raises(FernetKeyMissing):
        resolve_accounts(make_cfg(), db, {"OPENALGO_API_KEY": KEY_MAIN})
    with pytest.raises(WrongFernetKey):
        resolve_accounts(make_cfg(), db, {FERNET_ENV: new_fernet_key()})


# ---------------------------------------------------------------------------------------------
# The command line, as a user runs it
# ---------------------------------------------------------------------------------------------


def run_cli(cwd: Path, *args: str, stdin: str | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
    """``run.py accounts ARGS`` in ``cwd``, whose own config.toml names the store path."""
    config = cwd / "config.toml"
    if not config.exists():
        config.write_text('[store]\npath = "var/engine.db"\n', encoding="utf-8")
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("NIFTY_ENGINE") and k != "OPENALGO_API_KEY"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "accounts", *args], cwd=cwd,
                          env=clean | env, input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


def test_cli_add_list_remove_never_shows_the_key(tmp_path: Path, fernet_key: str) -> None:
    env = {FERNET_ENV: fernet_key}
    outputs: list[str] = []

    def ok(*args: str, stdin: str | None = None, **extra: str) -> str:
        done = run_cli(tmp_path, *args, stdin=stdin, **env, **extra)
        outputs.extend((done.stdout, done.stderr))
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "added account main" in ok("add", "main", "--host", HOST, "--ws-url", WS,
                                      OPENALGO_API_KEY=KEY_MAIN)
    assert "added account bk" in ok("add", "bk", "--host", "https://b.example", "--ws-url",
                                    "wss://b.example", "--role", "backup", "--key-stdin",
                                    stdin=KEY_BACKUP + "\n")
    assert "updated account main" in ok("add", "main", "--host", HOST, "--ws-url", WS,
                                        "--key-stdin", stdin=KEY_MAIN + "\n")
    listed = ok("list")
    assert "bk" in listed and "backup" in listed and "…back" in listed
    assert "main" in listed and "primary" in listed and "…main" in listed
    assert "removed account bk" in ok("remove", "bk")
    after = ok("list")
    assert "bk " not in after and "main" in after

    db_path = tmp_path / "var" / "engine.db"
    with Database(db_path) as db:
        assert [a.name for a in db.accounts()] == ["main"]
        assert AccountVault(db, KeyCipher(fernet_key), VirtualClock()).api_key("main") == KEY_MAIN
    log_text = (tmp_path / "var" / "engine.log").read_text()
    assert "accounts: removed bk" in log_text
    for secret in (KEY_MAIN, KEY_BACKUP, fernet_key):
        assert all(secret not in text for text in outputs)
        assert secret not in log_text
        assert secret.encode() not in raw_bytes(db_path)


def test_cli_db_option_and_a_key_never_taken_as_an_argument(tmp_path: Path,
                                                            fernet_key: str) -> None:
    other = tmp_path / "elsewhere" / "accounts.db"
    done = run_cli(tmp_path, "add", "main", "--host", HOST, "--ws-url", WS, "--db", str(other),
                   OPENALGO_API_KEY=KEY_MAIN, **{FERNET_ENV: fernet_key})
    assert done.returncode == 0, done.stderr
    with Database(other) as db:
        assert [a.name for a in db.accounts()] == ["main"]
    assert not (tmp_path / "var" / "engine.db").exists()

    refused = run_cli(tmp_path, "add", "x", "--host", HOST, "--ws-url", WS, "--key", KEY_MAIN,
                      **{FERNET_ENV: fernet_key})
    assert refused.returncode == 2 and "unrecognized arguments: --key" in refused.stderr

    no_key = run_cli(tmp_path, "add", "x", "--host", HOST, "--ws-url", WS,
                     **{FERNET_ENV: fernet_key})
    assert no_key.returncode == 2
    assert no_key.stderr.strip() == ("accounts: no API key: set OPENALGO_API_KEY, or pipe it in "
                                     "with --key-stdin")


def test_cli_stores_a_proxy_login_encrypted_never_from_an_argument(tmp_path: Path,
                                                                    fernet_key: str) -> None:
    env = {FERNET_ENV: fernet_key}
    password, remote = "proxy-pass-0c9d8e7f6a", ("--host", "https://oa.example",
                                                 "--ws-url", "wss://oa.example/ws")
    piped = run_cli(tmp_path, "add", "remote", *remote, "--basic-auth-user", "trader",
                    "--key-stdin", "--basic-auth-stdin", stdin=f"{KEY_MAIN}\n{password}\n",
                    **env)
    assert piped.returncode == 0, piped.stderr
    from_env = run_cli(tmp_path, "add", "second", *remote, "--basic-auth-user", "trader",
                       OPENALGO_API_KEY=KEY_BACKUP, NIFTY_ENGINE_BASIC_AUTH_PASSWORD=password,
                       **env)
    assert from_env.returncode == 0, from_env.stderr
    listed = run_cli(tmp_path, "list", **env)
    assert "wss://oa.example/ws" in listed.stdout and "basic auth trader" in listed.stdout
    db_path = tmp_path / "var" / "engine.db"
    with Database(db_path) as db:
        stored = {row.name: row for row in db.accounts()}
        assert stored["remote"].basic_auth_user == "trader"
        assert password not in repr(stored["remote"])
        accounts = {a.name: a for a in resolve_accounts(load_config(None), db,
                                                        {FERNET_ENV: fernet_key})}
    assert accounts["remote"].basic_auth is not None
    assert accounts["remote"].basic_auth.password == password
    assert accounts["remote"].api_key == KEY_MAIN
    assert password not in repr(accounts["remote"])

    no_password = run_cli(tmp_path, "add", "x", *remote, "--basic-auth-user", "trader",
                          OPENALGO_API_KEY=KEY_MAIN, **env)
    assert no_password.returncode == 2
    assert no_password.stderr.strip() == ("accounts: no basic-auth password: set "
                                          "NIFTY_ENGINE_BASIC_AUTH_PASSWORD, or pipe it in with "
                                          "--basic-auth-stdin")
    clear = run_cli(tmp_path, "add", "x", "--host", "http://oa.example", "--ws-url",
                    "ws://oa.example/ws", "--basic-auth-user", "trader",
                    OPENALGO_API_KEY=KEY_MAIN, NIFTY_ENGINE_BASIC_AUTH_PASSWORD=password, **env)
    assert clear.returncode == 2 and "would travel in clear text" in clear.stderr
    as_argument = run_cli(tmp_path, "add", "x", *remote, "--basic-auth-password", password,
                          OPENALGO_API_KEY=KEY_MAIN, **env)
    assert as_argument.returncode == 2 and "unrecognized arguments" in as_argument.stderr
    for done in (piped, from_env, listed, no_password, clear):
        assert password not in done.stdout + done.stderr
    assert password.encode() not in raw_bytes(db_path)
    assert password not in (tmp_path / "var" / "engine.log").read_text()


def test_cli_fernet_key_missing_malformed_or_wrong(tmp_path: Path, fernet_key: str) -> None:
    missing = run_cli(tmp_path, "add", "main", "--host", HOST, "--ws-url", WS,
                      OPENALGO_API_KEY=KEY_MAIN)
    assert missing.returncode == 2
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and FERNET_ENV in lines[0] and GENERATE_KEY_COMMAND in lines[0]
    assert not (tmp_path / "var" / "engine.db").exists()  # nothing generated, nothing stored

    malformed = run_cli(tmp_path, "list", **{FERNET_ENV: "not-a-fernet-key"})
    assert malformed.returncode == 2
    assert malformed.stderr.strip().splitlines() == [
        f"accounts: {FERNET_ENV} is not a valid Fernet key (it must be 32 url-safe "
        f"base64-encoded bytes); create one with: {GENERATE_KEY_COMMAND}"]

    added = run_cli(tmp_path, "add", "main", "--host", HOST, "--ws-url", WS,
                    OPENALGO_API_KEY=KEY_MAIN, **{FERNET_ENV: fernet_key})
    assert added.returncode == 0, added.stderr
    wrong_key = new_fernet_key()
    wrong = run_cli(tmp_path, "list", **{FERNET_ENV: wrong_key})
    assert wrong.returncode == 2
    assert "Traceback" not in wrong.stderr
    (line,) = wrong.stderr.strip().splitlines()
    assert "cannot be decrypted" in line and f"stored with another {FERNET_ENV}" in line
    assert "main" in wrong.stdout and "UNREADABLE" in wrong.stdout
    for text in (wrong.stdout, wrong.stderr):
        for secret in (KEY_MAIN, fernet_key, wrong_key):
            assert secret not in text


# ---------------------------------------------------------------------------------------------
# Notification URLs: stored encrypted beside the key, added to the environment's
# ---------------------------------------------------------------------------------------------

HOOK_TOKEN = "hook-token-7f3e9a2b1c"
TG_TOKEN = "AAbbCCddEEffGGhh"


def test_notify_urls_are_stored_encrypted_listed_as_a_count_and_kept_by_add(
        vault: AccountVault, db: Database, fernet_key: str) -> None:
    vault.add("main", HOST, WS, "primary", KEY_MAIN)
    urls = f"json://127.0.0.1:9/{HOOK_TOKEN}, tgram://123456789:{TG_TOKEN}/987654"
    assert vault.set_notify("main", urls) == 2
    (info,) = vault.list()
    assert info.notify == 2 and "notify 2 URL(s)" in info.line()
    assert HOOK_TOKEN not in info.line() and TG_TOKEN not in repr(info)
    stored = raw_bytes(db.path)
    assert HOOK_TOKEN.encode() not in stored and TG_TOKEN.encode() not in stored
    (row,) = db.accounts()
    assert row.notify_encrypted is not None and HOOK_TOKEN not in repr(row)
    # replacing the account (a new key, say) keeps where its notices go
    vault.add("main", HOST, WS, "primary", KEY_BACKUP)
    (account,) = resolve_accounts(load_config(None, env={}), db, {FERNET_ENV: fernet_key})
    assert account.notify_urls == (f"json://127.0.0.1:9/{HOOK_TOKEN} "
                                   f"tgram://123456789:{TG_TOKEN}/987654")
    assert HOOK_TOKEN not in repr(account)
    # a URL apprise cannot use is refused, the URL not repeated; nothing changes
    with pytest.raises(InvalidAccount, match=r"bogus://\*\*\*") as caught:
        vault.set_notify("main", f"bogus://{HOOK_TOKEN}")
    assert HOOK_TOKEN not in str(caught.value)
    assert vault.list()[0].notify == 2
    with pytest.raises(AccountNotFound):
        vault.set_notify("other", urls)
    assert vault.set_notify("main", "") == 0
    assert vault.list()[0].notify == 0 and db.accounts()[0].notify_encrypted is None


def test_cli_set_notify_from_the_environment_or_stdin_never_an_argument(
        tmp_path: Path, fernet_key: str) -> None:
    env = {FERNET_ENV: fernet_key}
    assert run_cli(tmp_path, "add", "main", "--host", HOST, "--ws-url", WS,
                   OPENALGO_API_KEY=KEY_MAIN, **env).returncode == 0
    url = f"json://127.0.0.1:9/{HOOK_TOKEN}"
    from_env = run_cli(tmp_path, "set-notify", "main", NIFTY_ENGINE_NOTIFY_URLS=url, **env)
    assert from_env.returncode == 0, from_env.stderr
    assert from_env.stdout.strip() == "account main: notices go to 1 URL(s)"
    piped = run_cli(tmp_path, "set-notify", "main", "--stdin",
                    stdin=f"{url} tgram://123456789:{TG_TOKEN}/987654\n", **env)
    assert piped.returncode == 0 and "2 URL(s)" in piped.stdout, piped.stderr
    listed = run_cli(tmp_path, "list", **env)
    assert "notify 2 URL(s)" in listed.stdout
    as_argument = run_cli(tmp_path, "set-notify", "main", url, **env)
    assert as_argument.returncode == 2 and "unrecognized arguments" in as_argument.stderr
    nothing = run_cli(tmp_path, "set-notify", "main", **env)
    assert nothing.returncode == 2
    assert nothing.stderr.strip() == ("accounts: no notification URLs: set "
                                      "NIFTY_ENGINE_NOTIFY_URLS, or pipe it in with --stdin")
    bogus = run_cli(tmp_path, "set-notify", "main", "--stdin", stdin=f"bogus://{HOOK_TOKEN}\n",
                    **env)
    assert bogus.returncode == 2 and "bogus://***" in bogus.stderr
    assert "Traceback" not in bogus.stderr
    cleared = run_cli(tmp_path, "set-notify", "main", "--clear", **env)
    assert cleared.returncode == 0 and "no notification URLs" in cleared.stdout
    db_path = tmp_path / "var" / "engine.db"
    log_text = (tmp_path / "var" / "engine.log").read_text()
    assert "accounts: main sends its notices to 2 URL(s): json://***, tgram://***" in log_text
    for done in (from_env, piped, listed, nothing, bogus, cleared):  # argparse echoes argv
        assert HOOK_TOKEN not in done.stdout + done.stderr
        assert TG_TOKEN not in done.stdout + done.stderr
    for secret in (HOOK_TOKEN, TG_TOKEN):
        assert secret not in log_text and secret.encode() not in raw_bytes(db_path)


def test_a_live_engine_notifies_its_accounts_urls_and_the_environments(
        tmp_path: Path, fernet_key: str, monkeypatch: pytest.MonkeyPatch,
        log_capture: io.StringIO) -> None:
    """The account's stored URL and NIFTY_ENGINE_NOTIFY_URLS both get the notices of an engine
    that trades (a replay with ``[notify] replay``, fed the venue ``live_venue`` chose)."""
    from datetime import date

    from engine.app.replay import ReplayDriver
    from engine.app.venues import live_venue
    from engine.market.synth import small_session
    from engine.runtime.notify import URLS_ENV

    sink = JsonHook()
    got = sink.calls
    port = sink.port
    try:
        store = tmp_path / "accounts.db"
        with Database(store) as db:
            vault = AccountVault(db, KeyCipher(fernet_key), VirtualClock())
            vault.add("main", HOST, WS, "primary", KEY_MAIN)
            vault.set_notify("main", f"json://127.0.0.1:{port}/{HOOK_TOKEN}")
        monkeypatch.setenv(FERNET_ENV, fernet_key)
        monkeypatch.setenv("OPENALGO_API_KEY", "")
        venue = live_venue(load_config(None, env={}, overrides={"store.path": str(store)}))
        venue.clock.stop()
        assert venue.notify_urls == f"json://127.0.0.1:{port}/{HOOK_TOKEN}"
        assert HOOK_TOKEN not in repr(venue)

        session = tmp_path / "s.db"
        small_session(session, date=date(2025, 9, 3), seed=1, symbols=2, minutes=60,
                      start="09:15")
        cfg = load_config(None, env={URLS_ENV: f"json://127.0.0.1:{port}/from-env"},
                          overrides={"notify.replay": "true", "notify.timeout_s": "2"})

        def hook(parts: object) -> None:
            parts.notify_urls = venue.notify_urls  # type: ignore[attr-defined]

        ReplayDriver(cfg, session, db_path=tmp_path / "e.db", progress=False,
                     strategies=("baseline_v1",), parts_hook=hook).run()
    finally:
        sink.close()
    paths = {path for path, _ in got}
    assert paths == {f"/{HOOK_TOKEN}", "/from-env"}, paths
    kinds = {body["title"] for _, body in got}
    assert any("filled" in str(title) for title in kinds), kinds
    assert HOOK_TOKEN not in log_capture.getvalue()
    assert "notify: 2 URL(s): json://***, json://***" in log_capture.getvalue()
