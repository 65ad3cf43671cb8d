/* Draws the day report's trade charts (engine/report/trade_charts.py) with TradingView's
   lightweight-charts, as the candles are drawn: R per trade (one bar per trade, the axis is the
   trade number) and the equity curve stepped at each exit above its drawdown.
   Zoom: mouse wheel or pinch; pan: drag; hover: the legend shows the point's figures.
   Needs candles.js first (its ``frame``: one look for every chart). */
(function () {
  "use strict";

  function money(v) {
    return (v >= 0 ? "+" : "") + Number(v).toLocaleString("en-IN", { maximumFractionDigits: 2 });
  }

  const frame = window.NiftyCandles.frame;

  function drawR(element, payload) {
    const f = frame(element, 260, {
      localization: { timeFormatter: function (n) { return "#" + n; } },
      timeScale: { tickMarkFormatter: function (n) { return "#" + n; }, fixLeftEdge: true },
    });
    const bars = f.chart.addHistogramSeries({ priceLineVisible: false, lastValueVisible: false,
                                              priceFormat: { type: "price", precision: 2,
                                                             minMove: 0.01 } });
    bars.setData(payload.bars);
    const summary = payload.bars.length + " trade(s): hover a bar for its figures";
    f.legend.textContent = summary;
    f.chart.subscribeCrosshairMove(function (param) {
      const label = param && param.time !== undefined ? payload.labels[String(param.time)] : "";
      f.legend.textContent = label || summary;
    });
    f.chart.timeScale().fitContent();
    element.dataset.bars = String(payload.bars.length);
    return f.chart;
  }

  function drawEquity(element, payload) {
    const f = frame(element, 340, { timeScale: { timeVisible: true, secondsVisible: true } });
    const equity = f.chart.addLineSeries({ color: "#0969da", lineWidth: 2, lineType: 1,
                                           priceLineVisible: false,
                                           pointMarkersVisible: true });
    equity.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.32 } });
    const drawdown = f.chart.addAreaSeries({ priceScaleId: "drawdown", lineType: 1,
                                             lineColor: "#cf222e", lineWidth: 1,
                                             topColor: "rgba(207,34,46,0.05)",
                                             bottomColor: "rgba(207,34,46,0.35)",
                                             priceLineVisible: false, lastValueVisible: false });
    drawdown.priceScale().applyOptions({ scaleMargins: { top: 0.74, bottom: 0 } });
    equity.setData(payload.equity);
    drawdown.setData(payload.drawdown);
    const byTime = new Map(payload.equity.map(function (p, i) {
      return [p.time, [p.value, payload.drawdown[i].value]];
    }));
    const summary = "closed-trade P&L (blue, right scale) and its drawdown (red, below)";
    f.legend.textContent = summary;
    f.chart.subscribeCrosshairMove(function (param) {
      const v = param && param.time !== undefined ? byTime.get(param.time) : undefined;
      if (!v) { f.legend.textContent = summary; return; }
      const t = new Date(param.time * 1000).toISOString().substring(11, 19);
      f.legend.textContent = t + " IST  P&L " + money(v[0]) + "  drawdown " + money(v[1]);
    });
    f.chart.timeScale().fitContent();
    element.dataset.points = String(payload.equity.length);
    return f.chart;
  }

  window.NiftyTrades = { drawR: drawR, drawEquity: drawEquity };
})();
