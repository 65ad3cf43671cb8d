"""The exchange calendar as OpenAlgo serves it: the year's trading holidays.

Owns ``fetch_holidays`` (``/api/v1/market/holidays``: the days that close the exchanges the
engine trades, NSE and NFO; a holiday that leaves them open, such as a special session, is not
one) and ``calendar_with`` (the ``[instrument]`` calendar with those days added). The day
lifecycle reads it daily and caches each year in the database, so the configured list is only
the offline fallback.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from engine.market.calendar import MarketCalendar
from engine.openalgo.rest import OpenAlgoClient
from engine.openalgo.wire import Fields


def _closed_days(body: Fields, exchanges: tuple[str, ...]) -> frozenset[date]:
    days = set()
    for row in body.objects("data"):
        closed = {str(x) for x in row.values("closed_exchanges", [])}
        if closed & set(exchanges):
            days.add(date.fromisoformat(row.text("date")[:10]))
    return frozenset(days)


def fetch_holidays(client: OpenAlgoClient, year: int,
                   exchanges: tuple[str, ...]) -> frozenset[date]:
    """The holidays of ``year`` that close any of ``exchanges`` (raises ``BrokerError``)."""
    return client.request("market/holidays", {"year": year},
                          lambda body: _closed_days(body, exchanges))


def calendar_with(calendar: MarketCalendar, holidays: frozenset[date]) -> MarketCalendar:
    return replace(calendar, holidays=calendar.holidays | holidays)
