"""The configuration loader: defaults, precedence, one clear line per kind of bad config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.app.config_doc import render_config_toml
from engine.app.sections import catalog, load_config
from engine.config import ConfigError, EngineSettings

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_shipped_config_toml_is_the_rendered_defaults() -> None:
    """config.toml documents every setting with its default: regenerate it when this fails."""
    rendered = render_config_toml(catalog(EngineSettings()))
    assert (ROOT / "config.toml").read_text(encoding="utf-8") == rendered


def test_every_setting_has_a_help_line() -> None:
    from engine.app.sections import describe_defaults

    missing = [f"{s}.{k}" for s, k, _, h in describe_defaults() if not h.strip()]
    assert not missing


def test_shipped_config_loads_and_equals_defaults() -> None:
    shipped = load_config(ROOT / "config.toml", env={})
    defaults = load_config(None, env={})
    for name in defaults.section_names():
        assert shipped.section(name) == defaults.section(name)


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, "[instrument]\nlot_size = 75\nstrike_step = 100\n")
    cfg = load_config(p, env={"NIFTY_ENGINE__INSTRUMENT__STRIKE_STEP": "25"},
                      overrides={"logging.level": "DEBUG"})
    assert cfg.instrument.lot_size == 75
    assert cfg.instrument.strike_step == 25
    assert cfg.logging.level == "DEBUG"
    assert cfg.source == str(p)


def test_env_list_values(tmp_path: Path) -> None:
    cfg = load_config(None, env={"NIFTY_ENGINE__INSTRUMENT__HOLIDAYS": "2026-01-26, 2026-03-03"})
    assert cfg.instrument.holidays == ("2026-01-26", "2026-03-03")
    assert len(cfg.instrument.spec().holidays) == 2


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[instrument]\nlot_sise = 65\n", "instrument.lot_sise", "unknown key"),
        ("[instrumnt]\nlot_size = 65\n", "instrumnt", "unknown section"),
        ('[instrument]\nlot_size = "65"\n', "instrument.lot_size", "expected an integer"),
        ("[instrument]\nlot_size = 0\n", "instrument.lot_size", "below the minimum"),
        ("[instrument]\ntick_size = 5.0\n", "instrument.tick_size", "above the maximum"),
        ('[engine]\non_signal = "panic"\n', "engine.on_signal", "not one of"),
        ("[logging]\nconsole = 1\n", "logging.console", "expected true or false"),
        ("[instrument]\nlot_size = 6.5\n", "instrument.lot_size", "expected an integer"),
        ('[instrument]\nsession_open = "9am"\n', "instrument.session_open", "HH:MM"),
        ('[instrument]\nsession_open = "16:00"\n', "instrument.session_close", "after"),
        ('[instrument]\nholidays = ["26-01-2026"]\n', "instrument.holidays", "YYYY-MM-DD"),
        ("[instrument\nlot_size = 65\n", "", "not valid TOML"),
        ("instrument = 5\n", "instrument", "must be a table"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, key: str, words: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p, env={})
    message = str(info.value)
    assert str(p) in message
    assert key in message
    assert words in message
    assert "\n" not in message


def test_bad_env_value_is_reported_with_its_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"NIFTY_ENGINE__INSTRUMENT__LOT_SIZE": "abc"})
    assert "NIFTY_ENGINE__INSTRUMENT__LOT_SIZE" in str(info.value)


def test_unknown_env_setting_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(None, env={"NIFTY_ENGINE__INSTRUMENT__NOPE": "1"})


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml", env={})


def test_secrets_come_from_env_and_are_never_shown() -> None:
    cfg = load_config(None, env={"OPENALGO_API_KEY": "k3y-very-secret"})
    assert cfg.secrets.openalgo_api_key == "k3y-very-secret"
    assert "k3y-very-secret" not in repr(cfg.secrets)
    with pytest.raises(ConfigError, match="NIFTY_ENGINE_FERNET_KEY"):
        cfg.secrets.require("fernet_key", "the account store")


def run_cli(*args: str, env_extra: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NIFTY_ENGINE") and k != "OPENALGO_API_KEY"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True,
                          text=True, env=env, cwd=cwd or ROOT, timeout=60)


@pytest.mark.parametrize(
    "text",
    [
        "[instrument]\nbogus = 1\n",
        '[instrument]\nlot_size = "x"\n',
        "[instrument]\nlot_size = -5\n",
        "[[broken\n",
    ],
)
def test_cli_bad_config_is_one_line_and_exit_2(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, text)
    proc = run_cli("config", "--config", str(p))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(p) in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_missing_secret_in_live_mode_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_cli("live", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "OPENALGO_API_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_secret_setting_in_a_file_is_refused(tmp_path: Path, monkeypatch) -> None:
    from dataclasses import dataclass

    from engine.app import sections as config_sections
    from engine.settings import setting

    @dataclass(frozen=True, slots=True)
    class WithSecret:
        token: str = setting("", "a secret token", secret=True)

    monkeypatch.setitem(config_sections.SECTIONS, "vault", WithSecret)
    p = write(tmp_path, '[vault]\ntoken = "abc123"\n')
    with pytest.raises(ConfigError) as info:
        load_config(p, env={})
    assert "vault.token" in str(info.value)
    assert "environment" in str(info.value)
    assert "abc123" not in str(info.value)


def test_cli_bad_set_override_exit_2() -> None:
    proc = run_cli("config", "--set", "instrument.lot_size")
    assert proc.returncode == 2
    assert "SECTION.KEY=VALUE" in proc.stderr


def test_per_group_supervision_defaults_and_overrides(tmp_path: Path) -> None:
    defaults = load_config(None, env={})
    assert defaults.supervision.execution.liveness_timeout == 60.0  # broker calls block
    assert defaults.supervision.market_data.liveness_timeout == 10.0
    p = write(tmp_path, "[supervision.execution]\nmax_restarts = 9\n")
    cfg = load_config(p, env={})
    assert cfg.supervision.execution.max_restarts == 9
    assert cfg.supervision.execution.liveness_timeout == 60.0  # the group default survives
    with pytest.raises(ConfigError, match=r"supervision\.market_data\.liveness_timeout"):
        load_config(None, env={}, overrides={"supervision.market_data.liveness_timeout": "1",
                                             "supervision.market_data.liveness_interval": "5"})


# -- issue 16, "Why" item 6: the holes a user found ---------------------------------------------
def refused(*, text: str | None = None, tmp_path: Path | None = None,
            env: dict[str, str] | None = None,
            overrides: dict[str, str] | None = None) -> ConfigError:
    path = write(tmp_path, text) if text is not None and tmp_path is not None else None
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {}, overrides=overrides)
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("rotation", ["50 XB", "0 MB", "weekly on mars", ""])
def test_a_log_rotation_loguru_cannot_read_is_refused_naming_its_source(rotation: str) -> None:
    error = refused(overrides={"logging.rotation": rotation})
    assert (error.key, error.source) == ("logging.rotation", "--set logging.rotation")
    error = refused(env={"NIFTY_ENGINE__LOGGING__ROTATION": rotation})
    assert error.source == "environment $NIFTY_ENGINE__LOGGING__ROTATION"


@pytest.mark.parametrize("how", ["--set", "env"])
def test_a_section_set_to_a_scalar_is_one_line_naming_its_source(how: str) -> None:
    if how == "--set":
        error = refused(overrides={"supervision.root": "3"})
        assert error.source == "--set supervision.root"
    else:
        error = refused(env={"NIFTY_ENGINE__SUPERVISION__ROOT": "3"})
        assert error.source == "environment $NIFTY_ENGINE__SUPERVISION__ROOT"
    assert error.key == "supervision.root" and "is a table" in str(error)


def test_config_check_refuses_an_unknown_strategy(tmp_path: Path) -> None:
    proc = run_cli("config", "--check", "--set", "engine.strategy=nope", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == ("config error: --set engine.strategy: engine.strategy: unknown "
                           "strategy 'nope'; known: baseline_v1, vwap_cross\n")


@pytest.mark.parametrize("eod", ["16:00", "15:30", "09:00", "15:15+05:30"])
def test_an_eod_exit_outside_the_session_is_refused(eod: str) -> None:
    error = refused(overrides={"risk.eod_exit": eod})
    assert (error.key, error.source) == ("risk.eod_exit", "--set risk.eod_exit")


def test_a_session_close_before_the_eod_exit_is_blamed_on_where_it_was_set(
        tmp_path: Path) -> None:
    error = refused(env={"NIFTY_ENGINE__INSTRUMENT__SESSION_CLOSE": "15:00"})
    assert error.key == "risk.eod_exit"
    assert error.source == "environment $NIFTY_ENGINE__INSTRUMENT__SESSION_CLOSE"
    assert "15:00" in str(error) and "would never fire" in str(error)
    # the same values from a file: the file is named
    error = refused(text='[instrument]\nsession_close = "15:00"\n', tmp_path=tmp_path)
    assert error.source == str(tmp_path / "config.toml")


@pytest.mark.parametrize(("given", "key"), [
    ({"instrument.session_open": "16:00"}, "instrument.session_close"),
    ({"supervision.root.backoff_min": "100"}, "supervision.root.backoff_max"),
    ({"supervision.execution.liveness_interval": "100"}, "supervision.execution.liveness_timeout"),
    ({"synth.late_max_s": "0.1"}, "synth.late_min_s"),
    ({"baseline_v1.sl_pct_min": "0.2"}, "baseline_v1.sl_pct_max"),
])
def test_a_problem_between_keys_names_the_override_that_caused_it(tmp_path: Path,
                                                                  given: dict[str, str],
                                                                  key: str) -> None:
    # the other key keeps its value from the file: the override is still the cause
    [(dotted, text)] = given.items()
    var = "NIFTY_ENGINE__" + dotted.replace(".", "__").upper()
    file = write(tmp_path, "[engine]\n")
    for error, source in ((refused(overrides=given), f"--set {dotted}"),
                          (refused(env={var: text}), f"environment ${var}"),
                          (_refused_with_file(file, given), f"--set {dotted}")):
        assert (error.key, error.source) == (key, source)


def _refused_with_file(path: Path, overrides: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, overrides=overrides)
    return info.value
