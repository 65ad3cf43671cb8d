"""Order groups: OpenAlgo's endpoints that place several orders, or an option found by offset.

Owns ``basketorder``, ``splitorder``, ``optionsorder`` and ``optionsmultiorder`` with the reply
bodies of OpenAlgo's services (basket_order_service.py, split_order_service.py,
place_options_order_service.py, options_multiorder_service.py). Every child order goes through
``SimulatedBroker.place_order``, as a ``placeorder`` would: it gets a real order id, shows in the
orderbook, and is refused the same way (whole lots, the tick, the freeze quantity). A child the
broker refuses is an error entry in ``results``; the group still answers success, as OpenAlgo
does. Options are found with the master contract's ``optionsymbol`` rule (ATM, ITMn, OTMn).
"""

from __future__ import annotations

from typing import Any

from engine.broker import BrokerError, RejectedError
from engine.sim.contracts import MasterContract
from engine.sim.matching import SimulatedBroker

MAX_SPLIT_ORDERS = 100  # split_order_service.MAX_ORDERS, place_options_order_service too


class OrderGroups:
    """The group endpoints over one simulated broker and its master contract."""

    def __init__(self, broker: SimulatedBroker, contract: MasterContract) -> None:
        self._broker = broker
        self._contract = contract

    def _place(self, strategy: str, order: dict[str, Any], quantity: int) -> str:
        return self._broker.place_order(
            strategy=strategy, symbol=order["symbol"], exchange=order["exchange"],
            action=order["action"].upper(), quantity=quantity, pricetype=order["pricetype"],
            product=order["product"], price=order["price"], trigger_price=order["trigger_price"],
            disclosed_quantity=order["disclosed_quantity"])

    def _parts(self, strategy: str, order: dict[str, Any], total: int,
               size: int) -> list[dict[str, Any]]:
        """``total`` placed as orders of ``size`` and one remainder, each with its result."""
        sizes = [size] * (total // size) + ([total % size] if total % size else [])
        results = []
        for n, qty in enumerate(sizes, start=1):
            try:
                results.append({"order_num": n, "quantity": qty, "status": "success",
                                "orderid": self._place(strategy, order, qty)})
            except BrokerError as exc:
                results.append({"order_num": n, "quantity": qty, "status": "error",
                                "message": exc.message})
        return results

    @staticmethod
    def _check_split(total: int, size: int) -> None:
        if -(-total // size) > MAX_SPLIT_ORDERS:
            raise RejectedError(f"Total number of orders would exceed maximum limit of "
                            f"{MAX_SPLIT_ORDERS}")

    # -- basketorder, splitorder ---------------------------------------------------------------
    def basket(self, strategy: str, orders: list[dict[str, Any]]) -> dict[str, Any]:
        """BUY orders first, then SELL (margin first), each its own result."""
        ordered = [o for o in orders if o["action"].upper() == "BUY"] + \
            [o for o in orders if o["action"].upper() == "SELL"]
        results = []
        for order in ordered:
            try:
                orderid = self._place(strategy, order, order["quantity"])
            except BrokerError as exc:
                results.append({"symbol": order["symbol"], "status": "error",
                                "message": exc.message})
                continue
            results.append({"symbol": order["symbol"], "exchange": order["exchange"],
                            "product": order["product"], "status": "success",
                            "orderid": orderid})
        return {"results": results}

    def split(self, strategy: str, order: dict[str, Any], splitsize: int) -> dict[str, Any]:
        total = order["quantity"]
        self._check_split(total, splitsize)
        return {"total_quantity": total, "split_size": splitsize,
                "results": self._parts(strategy, order, total, splitsize)}

    # -- optionsorder, optionsmultiorder -------------------------------------------------------
    def _resolve(self, target: dict[str, Any], leg: dict[str, Any]) -> dict[str, Any]:
        """The leg's option (``optionsymbol``): symbol, exchange, underlying_ltp, ..."""
        return self._contract.option_symbol(
            target["underlying"], target["exchange"],
            leg.get("expiry_date") or target.get("expiry_date"), target.get("strike_int"),
            leg["offset"], leg["option_type"])

    def options_order(self, strategy: str, target: dict[str, Any]) -> dict[str, Any]:
        """One option by offset, placed whole or (``splitsize`` > 0) in parts."""
        option = self._resolve(target, target)
        order = {**target, "symbol": option["symbol"], "exchange": option["exchange"]}
        head = {"symbol": option["symbol"], "exchange": option["exchange"],
                "underlying": target["underlying"], "underlying_ltp": option["underlying_ltp"],
                "offset": target["offset"], "option_type": target["option_type"].upper()}
        size, total = target.get("splitsize") or 0, target["quantity"]
        if size > 0:
            self._check_split(total, size)
            return {**head, "total_quantity": total, "split_size": size,
                    "results": self._parts(strategy, order, total, size)}
        return {"orderid": self._place(strategy, order, total), **head}

    def options_multiorder(self, strategy: str, target: dict[str, Any],
                           legs: list[dict[str, Any]], mode: str) -> dict[str, Any]:
        """Every leg by offset, BUY legs placed first; results in leg order."""
        order_of_play = [i for i, leg in enumerate(legs) if leg["action"].upper() == "BUY"] + \
            [i for i, leg in enumerate(legs) if leg["action"].upper() == "SELL"]
        results: dict[int, dict[str, Any]] = {}
        underlying_ltp = None
        for i in order_of_play:
            results[i], ltp = self._leg(strategy, target, legs[i], i + 1, mode)
            underlying_ltp = ltp if ltp is not None else underlying_ltp
        return {"underlying": target["underlying"], "underlying_ltp": underlying_ltp,
                "results": [results[i] for i in sorted(results)]}

    def _leg(self, strategy: str, target: dict[str, Any], leg: dict[str, Any], number: int,
             mode: str) -> tuple[dict[str, Any], float | None]:
        """The leg's result and the underlying LTP its option was found at."""
        shown = {"offset": leg["offset"], "option_type": leg["option_type"].upper(),
                 "action": leg["action"].upper()}
        try:
            option = self._resolve(target, leg)
        except BrokerError as exc:
            return {"leg": number, **shown, "status": "error", "message": exc.message}, None
        ltp = option["underlying_ltp"]
        head = {"leg": number, "symbol": option["symbol"], "exchange": option["exchange"],
                **shown}
        order = {**leg, "symbol": option["symbol"], "exchange": option["exchange"]}
        size, total = leg.get("splitsize") or 0, leg["quantity"]
        if size > 0:
            if -(-total // size) > MAX_SPLIT_ORDERS:
                return {**head, "status": "error",
                        "message": f"Split orders would exceed maximum limit of "
                                   f"{MAX_SPLIT_ORDERS} per leg"}, ltp
            parts = self._parts(strategy, order, total, size)
            ok = any(p["status"] == "success" for p in parts)
            return {**head, "product": leg["product"], "status": "success" if ok else "error",
                    "total_quantity": total, "split_size": size, "split_results": parts,
                    "mode": mode}, ltp
        try:
            orderid = self._place(strategy, order, total)
        except BrokerError as exc:
            return {**head, "status": "error", "message": exc.message}, ltp
        return {**head, "product": leg["product"], "status": "success", "orderid": orderid,
                "mode": mode}, ltp
