/* The dashboard page: reads /api/state once, then redraws on every "state" event of
   /api/events (server-sent events). Every text from the engine goes in as textContent. */
(function () {
  "use strict";
  const token = new URLSearchParams(location.search).get("token") || "";
  const withToken = function (path) {
    return path + (path.indexOf("?") >= 0 ? "&" : "?") + "token=" + encodeURIComponent(token);
  };
  const $ = function (id) { return document.getElementById(id); };
  let chart = null;
  let chartSymbol = null;
  let updates = 0;

  function ist(ts) {
    if (ts === null || ts === undefined) { return "unknown"; }
    return new Date((Number(ts) + 19800) * 1000).toISOString().substring(11, 19);
  }
  function num(v, digits) {
    return v === null || v === undefined ? "-" : Number(v).toFixed(digits === undefined ? 2 : digits);
  }
  function signed(v) { return v === null || v === undefined ? "-" : (v > 0 ? "+" : "") + num(v); }
  function cls(v) { return v > 0 ? "pos" : v < 0 ? "neg" : ""; }

  function table(id, headers, rows, empty) {
    const holder = $(id);
    holder.textContent = "";
    if (!rows.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = empty;
      holder.appendChild(p);
      return;
    }
    const t = document.createElement("table");
    t.id = id + "-table";
    const head = t.createTHead().insertRow();
    headers.forEach(function (h) {
      const th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    });
    const body = t.createTBody();
    rows.forEach(function (row) {
      const tr = body.insertRow();
      if (row.key) { tr.dataset.key = row.key; }
      row.cells.forEach(function (cell) {
        const td = tr.insertCell();
        const c = Array.isArray(cell) ? cell : ["", cell];
        if (c[0]) { td.className = c[0]; }
        td.textContent = c[1];
      });
    });
    holder.appendChild(t);
  }

  function cards(id, items) {
    const holder = $(id);
    holder.textContent = "";
    items.forEach(function (item) {
      const card = document.createElement("div");
      card.className = "card";
      const label = document.createElement("div");
      label.className = "label";
      label.textContent = item[0];
      const value = document.createElement("div");
      value.className = "value " + (item[2] || "");
      value.textContent = item[1];
      card.appendChild(label);
      card.appendChild(value);
      holder.appendChild(card);
    });
  }

  function render(s) {
    const st = s.status || {};
    const conn = st.connection || {};
    const risk = st.risk || {};
    const hb = s.heartbeat;
    $("source").textContent = s.source;
    $("day").textContent = s.day;
    cards("connection", [
      ["feed", conn.websocket || "unknown"],
      ["last tick (IST)", ist(conn.last_tick_ts)],
      ["live / subscribed", (conn.live === undefined ? "-" : conn.live) + " / " +
        (conn.subscribed === undefined ? "-" : conn.subscribed)],
      ["heartbeat (IST)", hb ? ist(hb.ts) + " " + hb.state : "none yet"],
      ["engine time (IST)", ist(s.now)],
      ["restarts", (st.supervisor || {}).restarts === undefined ? "-" : st.supervisor.restarts],
    ]);
    const positions = st.positions || [];
    // filled at the broker with its price not known yet (docs: execution-and-risk, price pending)
    const avgPrice = function (p) {
      if (!p.price_pending) return num(p.average_price);
      if (p.price_pending === Math.abs(p.quantity)) return "price pending";
      return num(p.average_price) + " (" + p.price_pending + " pending)";
    };
    let total = 0;
    table("positions", ["symbol", "strategy", "qty", "avg price", "ltp", "P&L", "R", "stop"],
      positions.map(function (p) {
        total += Number(p.pnl || 0);
        return { key: p.strategy + "|" + p.symbol, cells: [p.symbol, p.strategy,
          ["num", String(p.quantity)], ["num", avgPrice(p)], ["num", num(p.ltp)],
          ["num " + cls(p.pnl), signed(p.pnl)], ["num " + cls(p.r), signed(p.r)],
          ["num", p.stop ? num(p.stop) : "-"]] };
      }), "No open position.");
    $("positions").dataset.pnl = total.toFixed(2);
    $("positions").dataset.count = String(positions.length);
    table("working", ["created (IST)", "order", "strategy", "symbol", "purpose", "side", "qty",
                      "filled", "type", "price", "trigger", "status"],
      (s.working || []).map(function (o) {
        return { key: o.client_id, cells: [ist(o.created_ts), o.client_id, o.strategy, o.symbol,
          o.purpose, o.action, ["num", String(o.quantity)], ["num", String(o.filled)],
          o.pricetype, ["num", num(o.price)], ["num", num(o.trigger_price)], o.status] };
      }), "No working order.");
    const limits = risk.limits || {};
    const strategies = risk.strategies || {};
    cards("risk", [
      ["state", risk.state || "unknown"],
      ["realized P&L", signed(risk.realized_pnl), cls(risk.realized_pnl)],
      ["unrealized P&L", signed(risk.unrealized_pnl), cls(risk.unrealized_pnl)],
    ].concat(Object.keys(limits).map(function (k) { return ["limit " + k, String(limits[k])]; }))
     .concat(Object.keys(strategies).map(function (k) {
       const v = strategies[k] || {};
       return [k, (v.state || "unknown") + (v.realized_r === undefined ? "" :
         "  R " + signed(v.realized_r)) + (v.halt_reason ? " (" + v.halt_reason + ")" : "")];
     })));
    table("trades", ["strategy", "symbol", "side", "qty", "entry (IST)", "entry", "exit (IST)",
                     "exit", "P&L", "R", "exit reason"],
      (s.trades || []).map(function (t) {
        return { cells: [t.strategy, t.symbol, t.action, ["num", String(t.quantity)],
          ist(t.entry_ts), ["num", num(t.entry_price)], ist(t.exit_ts), ["num", num(t.exit_price)],
          ["num " + cls(t.pnl), signed(t.pnl)], ["num " + cls(t.r), signed(t.r)],
          t.exit_reason || "-"] };
      }), "No closed trade yet.");
    table("alerts", ["time (IST)", "severity", "kind", "message"],
      (s.alerts || []).map(function (a) {
        return { cells: [ist(a.ts), [a.severity, a.severity], a.kind, a.message] };
      }), "No alert.");
    symbols(s.symbols || []);
    updates += 1;
    document.body.dataset.version = s.version;
    document.body.dataset.updates = String(updates);
    drawChart();
  }

  function symbols(list) {
    const select = $("symbol");
    const have = Array.from(select.options).map(function (o) { return o.value; });
    if (have.join("\n") === list.join("\n")) { return; }
    const keep = select.value;
    select.textContent = "";
    list.forEach(function (name) {
      const o = document.createElement("option");
      o.value = name;
      o.textContent = name;
      select.appendChild(o);
    });
    if (list.indexOf(keep) >= 0) { select.value = keep; }
  }

  function drawChart() {
    const symbol = $("symbol").value;
    if (!symbol) { return; }
    fetch(withToken("/api/candles?symbol=" + encodeURIComponent(symbol)))
      .then(function (r) { return r.json(); })
      .then(function (payload) {
        if (chart && chartSymbol === symbol) {
          chart.update(payload);
        } else {
          chart = NiftyCandles.draw($("chart"), payload);
          chartSymbol = symbol;
        }
      });
  }

  $("symbol").addEventListener("change", function () { chartSymbol = null; drawChart(); });

  fetch(withToken("/api/state")).then(function (r) {
    if (!r.ok) { throw new Error("HTTP " + r.status); }
    return r.json();
  }).then(render).catch(function (e) { $("live").textContent = "no state: " + e.message; });

  const events = new EventSource(withToken("/api/events"));
  events.addEventListener("state", function (e) {
    $("live").textContent = "live: updated " + new Date().toLocaleTimeString();
    render(JSON.parse(e.data));
  });
  events.onerror = function () { $("live").textContent = "disconnected; retrying…"; };
})();
