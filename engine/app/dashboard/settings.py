"""The dashboard's settings (section ``[dashboard]``), apart from its server so that listing the
sections imports no web server."""

from __future__ import annotations

from dataclasses import dataclass

from engine.settings import setting


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """Section ``[dashboard]``: the live web page of a running engine."""

    enabled: bool = setting(True, "serve the dashboard while paper or live trading runs, on "
                            "127.0.0.1 with a token (the link goes to <state_dir>/dashboard.url)")
    replay: bool = setting(False, "serve it during a replay too")
    port: int = setting(8780, "the port on 127.0.0.1 (0: any free port; 8765 is OpenAlgo's "
                        "WebSocket); one in use is logged "
                        "and the engine trades on without a dashboard", min=0, max=65535)
    push_interval_s: float = setting(1.0, "how often the page's figures are refreshed (a "
                                     "snapshot is sent only when something changed)",
                                     min=0.2, max=60.0)
