"""Quantity filled before its price is known: the ``PendingFill`` then ``Fill`` bookkeeping.

Owns one rule, shared by the position monitor and the strategies: per broker order, the
cumulative quantity the broker says is filled (``PendingFill``) and the cumulative quantity
already priced (``Fill``); the outstanding part (pending − priced, never below 0) is held
without a price. A priced fill completes the pending quantity up to its cumulative quantity, so
nothing is counted twice whichever of the two arrives first or again (every priced fill is
recorded for that reason, one entry per order), and what each call returns is how much the
outstanding quantity moved, so a holder can keep a running count instead of summing a book
that keeps every order of the day. The book is a plain
``{broker order id: [pending cumulative, priced cumulative]}`` dict, so it goes into JSON
snapshots as it is (docs/execution-and-risk.md, "Fill prices").
"""

from __future__ import annotations

PendingBook = dict[str, list[int]]


def add_pending(book: PendingBook, orderid: str, cumulative: int) -> int:
    """The broker says ``cumulative`` is filled on ``orderid``: returns the quantity newly held
    without a price (0: nothing new, already pending or priced), by which ``outstanding(book)``
    grew."""
    pending, done = book.get(orderid, (0, 0))
    new = cumulative - max(pending, done)
    if new <= 0:
        return 0
    book[orderid] = [cumulative, done]
    return new


def add_priced(book: PendingBook, orderid: str, cumulative: int) -> int:
    """A priced fill up to ``cumulative`` on ``orderid`` (recorded, so a later pending report of
    the same quantity adds nothing): returns the pending quantity it completes (already held,
    so not to be added again), by which ``outstanding(book)`` shrank."""
    pending, done = book.get(orderid, (0, 0))
    before = max(0, pending - done)
    done = max(done, cumulative)
    book[orderid] = [pending, done]
    return before - max(0, pending - done)


def is_pending(book: PendingBook, orderid: str) -> bool:
    """Whether part of ``orderid`` is held without a price."""
    pending, done = book.get(orderid, (0, 0))
    return pending > done


def outstanding(book: PendingBook) -> int:
    """Quantity held without a price."""
    return sum(max(0, pending - done) for pending, done in book.values())
