"""Delivery cost under the calling-thread dispatcher: actor tells against plain method calls.

Two ``EngineActor`` s under one ``Dispatcher`` (engine.runtime.dispatcher) pass a message back
and forth, each handler telling the other by name through the registry, until ``--messages``
deliveries are done (the replay's hot path: about 3 M deliveries per bundled day). The same
handler bodies are then called in a plain loop, as method calls, for the same count. The ratio
plain/actor is what one delivery costs in units of a bare handler call, and it holds on a loaded
machine (both halves run in this process, back to back, best of ``--repeat``, in CPU time).

Usage: python bench/dispatch_throughput.py [--messages N] [--repeat K]
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Report, arg_parser  # noqa: E402
from engine.runtime.actor import EngineActor, handles  # noqa: E402
from engine.runtime.clock import VirtualClock  # noqa: E402
from engine.runtime.dispatcher import Dispatcher  # noqa: E402
from engine.runtime.registry import Registry  # noqa: E402


@dataclass(frozen=True, slots=True)
class Ball:
    hops: int


class Player(EngineActor):
    """Told a ``Ball``, tells ``other`` the ball with one hop less (until none are left)."""

    def __init__(self, other: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.other = other
        self.caught = 0

    @handles(Ball)
    def on_ball(self, ball: Ball) -> None:
        self.caught += 1
        if ball.hops > 1:
            self.tell(self.other, Ball(ball.hops - 1))


def dispatched(messages: int) -> float:
    """CPU seconds for ``messages`` deliveries between two dispatched actors."""
    dispatcher = Dispatcher()
    registry = Registry(VirtualClock(0.0), dispatcher=dispatcher)
    for name, other in (("a", "b"), ("b", "a")):
        registry.declare(name)
        registry.register(name, Player.start(other, name=name, registry=registry,
                                             clock=VirtualClock(0.0)))
    started = time.process_time()
    registry.tell("a", Ball(messages))
    handled = dispatcher.run()
    elapsed = time.process_time() - started
    assert handled == messages, handled
    return elapsed


class _Plain:
    """The same handler body, the other player called directly (no actor in between)."""

    def __init__(self) -> None:
        self.other: _Plain = self
        self.caught = 0

    def on_ball(self, ball: Ball) -> Ball | None:
        self.caught += 1
        return Ball(ball.hops - 1) if ball.hops > 1 else None


def plain(messages: int) -> float:
    a, b = _Plain(), _Plain()
    a.other, b.other = b, a
    started = time.process_time()
    player: _Plain = a
    ball: Ball | None = Ball(messages)
    while ball is not None:
        ball = player.on_ball(ball)
        player = player.other
    elapsed = time.process_time() - started
    assert a.caught + b.caught == messages
    return elapsed


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="50,000 messages once (a smoke test)")
    args = p.parse_args()
    if args.quick:
        args.messages, args.repeat = 50_000, 1
    actor_s = min(dispatched(args.messages) for _ in range(args.repeat))
    plain_s = min(plain(args.messages) for _ in range(args.repeat))
    report = Report("dispatch_throughput", "two dispatched actors telling each other, "
                    "against plain handler calls")
    for path, seconds in (("dispatched actors", actor_s), ("plain calls", plain_s)):
        report.row(path=path, messages=args.messages, cpu_s=round(seconds, 3),
                   per_s=round(args.messages / seconds),
                   us_each=round(seconds / args.messages * 1e6, 3))
    report.figure("delivery_cost_in_plain_calls", round(actor_s / plain_s, 2))
    report.finish(args.json)


if __name__ == "__main__":
    main()
