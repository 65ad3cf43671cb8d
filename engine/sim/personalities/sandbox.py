"""``sandbox``: OpenAlgo's analyzer (services/sandbox_service.py) answering for the broker.

Differences from ``ideal``: the simulator starts in analyzer mode, so replies carry
``"mode": "analyze"``, ``orderstatus`` names ``price_type`` and adds ``pending_quantity``
(sandbox/order_manager.py), and order updates say ``mode: analyze``.
"""

from __future__ import annotations

from engine.sim.personalities.base import Personality


class Sandbox(Personality):
    name = "sandbox"
    analyze = True
