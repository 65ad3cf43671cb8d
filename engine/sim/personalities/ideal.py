"""``ideal``: OpenAlgo's tidiest answers, every field present (the simulator before issue 15)."""

from __future__ import annotations

from engine.sim.personalities.base import Personality


class Ideal(Personality):
    """Every reply field present as a number; in-between states never shown."""
