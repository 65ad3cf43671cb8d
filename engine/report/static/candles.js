/* Draws one symbol's candle chart (engine/report/candles.py's chart_payload) with TradingView's
   lightweight-charts: candles, swing / entry / exit markers, stop and swing levels as segments.
   Zoom: mouse wheel or pinch; pan: drag; hover: the legend shows the minute's OHLC.
   Used by the day report (inline) and the live dashboard; ``frame`` (a legend line above an
   empty chart) serves the report's trade charts too (trades.js). */
(function () {
  "use strict";

  function fmt(v) { return v === undefined || v === null ? "-" : Number(v).toFixed(2); }

  /* ``element`` emptied and given a legend line and a chart of ``height`` px (``options``
     added to the shared look); returns {chart, legend}. */
  function frame(element, height, options) {
    element.innerHTML = "";
    const legend = document.createElement("div");
    legend.className = "candle-legend";
    element.appendChild(legend);
    const host = document.createElement("div");
    element.appendChild(host);
    const chart = LightweightCharts.createChart(host, Object.assign({
      height: height,
      autoSize: false,
      width: element.clientWidth || 900,
      layout: { background: { color: "#ffffff" }, textColor: "#1f2328" },
      grid: { vertLines: { color: "#eaeef2" }, horzLines: { color: "#eaeef2" } },
      crosshair: { mode: 0 },
    }, options));
    return { chart: chart, legend: legend };
  }

  function draw(element, payload, options) {
    const f = frame(element, (options && options.height) || 380,
                    { timeScale: { timeVisible: true, secondsVisible: false } });
    const chart = f.chart;
    const legend = f.legend;
    const candles = chart.addCandlestickSeries({
      upColor: "#1a7f37", downColor: "#cf222e", borderVisible: false,
      wickUpColor: "#1a7f37", wickDownColor: "#cf222e", priceLineColor: "#57606a",
    });
    let levels = [];
    let byTime = new Map();

    function set(p) {
      candles.setData(p.candles);
      candles.setMarkers(p.markers);
      levels.forEach(function (s) { chart.removeSeries(s); });
      levels = p.segments.map(function (seg) {
        const line = chart.addLineSeries({
          color: seg.color, lineStyle: seg.style, lineWidth: 1, title: "",
          lastValueVisible: false, priceLineVisible: false, crosshairMarkerVisible: false,
        });
        line.setData(seg.points);
        return line;
      });
      byTime = new Map(p.candles.map(function (c) { return [c.time, c]; }));
      legend.textContent = p.symbol + (p.candles.length ? "" : ": no 1-minute bars stored");
      element.dataset.candles = String(p.candles.length);
      element.dataset.markers = String(p.markers.length);
    }

    chart.subscribeCrosshairMove(function (param) {
      const c = param && param.time !== undefined ? byTime.get(param.time) : undefined;
      if (!c) { return; }
      const t = new Date(c.time * 1000).toISOString().substring(11, 16);
      legend.textContent = element.dataset.symbol + "  " + t + " IST  O " + fmt(c.open) +
        "  H " + fmt(c.high) + "  L " + fmt(c.low) + "  C " + fmt(c.close);
    });
    element.dataset.symbol = payload.symbol;
    set(payload);
    chart.timeScale().fitContent();
    return {
      chart: chart,
      update: function (p) { element.dataset.symbol = p.symbol; set(p); },
    };
  }

  window.NiftyCandles = { draw: draw, frame: frame };
})();
