"""The settings of the operator control socket (section ``[control]``), apart from the socket's
code (``engine.app.control``) so that listing the sections imports no socket server."""

from __future__ import annotations

from dataclasses import dataclass

from engine.settings import setting


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """Section ``[control]``: the operator control socket (the stop-signal policy is
    ``[engine] on_signal``)."""

    enabled: bool = setting(True, "listen for operator commands (run.py status, pause, ...)")
    socket_path: str = setting("var/control/engine.sock", "the control socket, relative to the "
                               "working directory; its directory is kept private (mode 0700)")
    max_request_bytes: int = setting(65536, "longest request line the engine accepts",
                                     min=1024, max=1 << 20)
    idle_timeout_s: float = setting(10.0, "the engine drops a connection idle this long",
                                    min=0.1, max=600)
    client_timeout_s: float = setting(60.0, "how long run.py waits for the engine's answer "
                                      "(a flatten can take a while)", min=1, max=3600)
    chaos_enabled: bool = setting(False, "accept the chaos command (crash a named actor: fault "
                                  "injection for tests and drills); never on in production")
