"""The Notifier actor: turns engine events into notices and hands them to the delivery thread.

Owns nothing but the gate (``engine.runtime.notify.NoticeGate``): it receives the store's copies
of fills, order events, risk events and alerts, and the health actor's feed-status changes; each
one that makes a notice and passes the gate goes to the engine's ``Delivery``, which never
blocks (its own thread, a bounded queue). A restart loses only the gate's memory.
"""

from __future__ import annotations

from typing import Any

from engine.messages import Alert, FeedStatus, Fill, OrderEvent, RiskEvent, StatusRequest
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.runtime.notify import Delivery, NoticeGate, NotifySettings, notice_of

#: what the store forwards to the notifier
NOTIFIED_TYPES = (Fill, OrderEvent, RiskEvent, Alert)


class Notifier(EngineActor):
    def __init__(self, supervision: Supervision | None = None, *, settings: NotifySettings,
                 delivery: Delivery, **kw: Any) -> None:
        super().__init__(supervision, **kw)
        self.delivery = delivery
        self.gate = NoticeGate(settings)

    @handles(Fill, OrderEvent, RiskEvent, Alert, FeedStatus)
    def on_event(self, message: Any) -> None:
        notice = notice_of(message)
        if notice is not None and self.gate.allow(notice):
            self.delivery.put(notice)

    @handles(StatusRequest)
    def status(self, _: StatusRequest) -> dict[str, int]:
        d, g = self.delivery, self.gate
        return {"sent": d.sent, "failed": d.failed, "dropped": d.dropped,
                "filtered": g.filtered, "throttled": g.throttled, "duplicates": g.duplicates}
