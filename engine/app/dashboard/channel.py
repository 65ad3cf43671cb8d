"""``dashboard_channel``: the dashboard of a trading engine while it runs.

Apart from the server so that an engine without a dashboard (a replay, by default) imports
neither the web server nor the page's view nor the operator's control code: they are imported
when a page is served.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from engine.app.dashboard.settings import DashboardSettings

if TYPE_CHECKING:
    from engine.app.dashboard.server import DashboardServer


@contextlib.contextmanager
def dashboard_channel(engine: Any, *, openalgo_url: str, replay: bool = False
                      ) -> Iterator[DashboardServer | None]:
    """The dashboard of a running ``engine`` (``engine.app.tree.Engine``) while the block runs:
    None when ``[dashboard]`` is off (or it is a replay not asked to serve one) or the port
    cannot be used (one ERROR line; the engine trades on). A replay's page reads the database
    only (its actors are stepped by the replay driver, not asked from outside)."""
    settings: DashboardSettings = engine.cfg.section("dashboard")
    if not settings.enabled or (replay and not settings.replay):
        yield None
        return
    from engine.app.dashboard.server import HOST, DashboardServer, redact
    from engine.app.dashboard.view import DashboardView
    from engine.app.operator import EngineOperator

    server: DashboardServer | None = None
    url_file: Path | None = None
    try:
        parts = engine.parts
        operator = EngineOperator(engine, openalgo_url=openalgo_url)
        view = DashboardView(Path(parts.db_path), day=parts.trading_day,
                             status=None if replay else operator.status,
                             source=parts.mode, symbols=[s for s, _ in parts.symbols],
                             now=engine.clock.time)
        server = DashboardServer(view, settings)
        server.start()
        url_file = server.write_url_file(Path(engine.cfg.engine.state_dir))
        logger.info("dashboard: http://{}:{}/?token={} (the full link is in {})", HOST,
                    server.port, redact(server.token), url_file)
    except Exception as exc:  # never a dead engine for a page
        logger.error("dashboard not available: {}", exc)
        if server is not None:
            server.close()
        server = None
    try:
        yield server
    finally:
        if server is not None:
            server.close()
            if url_file is not None:
                with contextlib.suppress(OSError):
                    if url_file.read_text().strip() == server.url:
                        url_file.unlink()
