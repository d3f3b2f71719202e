// The report's charts (ECharts) and flagged rows (Tabulator), drawn from the
// JSON document #report-data that lossaudit.report writes.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var charts = {};
  var table = null;

  function text(value) {
    if (value === null || value === undefined) return "";
    if (Array.isArray(value)) return value.map(text).join(", ");
    if (typeof value === "number" && !Number.isInteger(value)) {
      return String(Number(value.toPrecision(6)));
    }
    return String(value);
  }

  function escapeHtml(value) {
    return text(value).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;",
              "'": "&#39;"}[c];
    });
  }

  function cut(label) {
    return label.length <= 24 ? label : label.slice(0, 23) + "\u2026";
  }

  function chart(id) {
    var element = document.getElementById(id);
    if (!element) return null;
    charts[id] = echarts.init(element, null, {renderer: "svg"});
    return charts[id];
  }

  function thresholdLines(thresholds) {
    return {
      symbol: "none", silent: true,
      lineStyle: {color: "#c0392b", type: "dashed"},
      label: {formatter: "{b}", color: "#c0392b"},
      data: Object.keys(thresholds).map(function (rule) {
        return {name: rule, xAxis: thresholds[rule]};
      })
    };
  }

  function histogram() {
    var h = data.histogram;
    var c = h && chart("histogram");
    if (!c) return;
    var box = document.getElementById("log-scale");
    function draw() {
      var log = box.checked;
      var bars = h.counts.map(function (n, i) {
        return [h.edges[i], h.edges[i + 1], log ? Math.log10(1 + n) : n, n];
      });
      c.setOption({
        animation: false,
        grid: {left: 64, right: 24, top: 28, bottom: 48},
        tooltip: {formatter: function (p) {
          return escapeHtml(p.value[0]) + " \u2013 " + escapeHtml(p.value[1]) +
              ": ~" + Math.round(p.value[3]);
        }},
        xAxis: {type: "value", min: h.edges[0], max: h.edges[h.edges.length - 1],
                name: "per-sample loss", nameLocation: "middle", nameGap: 28,
                axisLabel: {formatter: function (v) {
                  return String(Number(v.toPrecision(4)));
                }}},
        yAxis: {type: "value",
                name: log ? "log10(1 + examples)" : "examples"},
        series: [{
          type: "custom", name: "examples", data: bars,
          encode: {x: [0, 1], y: 2, tooltip: [0, 1, 3]},
          renderItem: function (params, api) {
            var start = api.coord([api.value(0), api.value(2)]);
            var end = api.coord([api.value(1), 0]);
            return {type: "rect", style: {fill: "#4a7ab5"},
                    shape: {x: start[0], y: start[1],
                            width: Math.max(end[0] - start[0] - 1, 1),
                            height: end[1] - start[1]}};
          }
        }, {type: "line", data: [], markLine: thresholdLines(h.thresholds)}]
      }, true);
    }
    box.addEventListener("change", draw);
    draw();
  }

  function heatMap() {
    var m = data.heatMap;
    var c = m && chart("label-issue-matrix");
    if (!c) return;
    // Room for the longest class label (cut at 24 characters) on each axis.
    var room = 16 + 7 * Math.min(24, Math.max.apply(null, m.labels.map(
        function (label) { return label.length; })));
    c.setOption({
      animation: false,
      grid: {left: room + 24, right: 24, top: 32, bottom: room + 24},
      tooltip: {formatter: function (p) {
        return "given " + escapeHtml(m.labels[p.value[1]]) + ", suggested " +
            escapeHtml(m.labels[p.value[0]]) + ": " + p.value[2];
      }},
      xAxis: {type: "category", data: m.labels, name: "suggested label",
              nameLocation: "middle", nameGap: room, position: "bottom",
              axisLabel: {rotate: 90, interval: 0, formatter: cut},
              splitArea: {show: true}},
      yAxis: {type: "category", data: m.labels, inverse: true,
              name: "given label", nameLocation: "middle", nameGap: room,
              axisLabel: {interval: 0, formatter: cut},
              splitArea: {show: true}},
      visualMap: {show: false, min: 0, max: Math.max(m.max, 1),
                  inRange: {color: ["#fcdede", "#b00020"]}},
      series: [{type: "heatmap", name: "label issues", data: m.cells,
                label: {show: m.labels.length <= 15},
                emphasis: {itemStyle: {borderColor: "#222", borderWidth: 1}}}]
    });
    c.on("click", function (p) {
      if (p.componentType !== "series") return;
      filterPair(m.classes[p.value[1]], m.classes[p.value[0]],
                 m.labels[p.value[1]], m.labels[p.value[0]], p.value[2]);
    });
  }

  function dataMap() {
    var d = data.dataMap;
    var c = d && chart("data-map");
    if (!c) return;
    var series = d.levels.map(function (level) {
      return {type: "scatter", name: "correctness \u2248 " +
                  level.correctness.toFixed(1),
              data: level.points, symbolSize: 5,
              itemStyle: {color: level.colour, opacity: 0.8}};
    });
    var guides = [{name: "ambiguous", xAxis: d.ambiguous_variability}];
    series.push({type: "scatter", name: "flagged", data: d.flagged,
                 symbol: "emptyCircle", symbolSize: 10,
                 itemStyle: {color: "#111"},
                 markLine: {symbol: "none", silent: true,
                            lineStyle: {color: "#444", type: "dashed"},
                            label: {formatter: "{b}"},
                            data: guides.concat([[
                              {name: "easy above, hard below",
                               coord: [0, d.easy_confidence]},
                              {coord: [Math.min(d.ambiguous_variability,
                                                d.x_max),
                                       d.easy_confidence]}]])}});
    c.setOption({
      animation: false,
      grid: {left: 64, right: 170, top: 24, bottom: 56},
      legend: {orient: "vertical", right: 0, top: 24},
      tooltip: {formatter: function (p) {
        return escapeHtml(p.seriesName) + ": variability " +
            escapeHtml(p.value[0]) + ", confidence " + escapeHtml(p.value[1]);
      }},
      xAxis: {type: "value", min: 0, max: d.x_max,
              name: "variability (std over checkpoints)",
              nameLocation: "middle", nameGap: 30},
      yAxis: {type: "value", min: 0, max: 1,
              name: "confidence (mean probability of the given label)",
              nameLocation: "middle", nameGap: 40},
      series: series
    });
  }

  function heldoutLoss() {
    var h = data.heldout;
    var c = h && chart("heldout-loss");
    if (!c) return;
    c.setOption({
      animation: false,
      grid: {left: 64, right: 24, top: 32, bottom: 48},
      legend: {top: 0},
      tooltip: {trigger: "axis"},
      xAxis: {type: "category", data: h.checkpoints, name: "checkpoint",
              nameLocation: "middle", nameGap: 28},
      yAxis: {type: "value", scale: true, name: "mean held-out loss"},
      series: h.folds.map(function (fold) {
        var best = fold.losses[fold.selected];
        return {type: "line", name: "fold " + fold.name, data: fold.losses,
                markPoint: best === null ? undefined : {
                  symbol: "emptyCircle", symbolSize: 14,
                  label: {show: false},
                  data: [{coord: [fold.selected, best],
                          name: "selected"}]}};
      })
    });
  }

  // Flagged rows ------------------------------------------------------------

  function textCell(cell) {
    var span = document.createElement("span");
    span.textContent = text(cell.getValue());
    return span;
  }

  function previewCell(cell) {
    var shown = cell.getValue();
    var element;
    if (!shown) {
      element = document.createElement("em");
      element.textContent = "not found in the input";
    } else if (shown.kind === "image") {
      element = document.createElement("img");
      element.src = shown.uri;
      element.width = shown.width;
      element.height = shown.height;
      element.alt = element.title = shown.format + " image";
    } else {
      element = document.createElement(shown.kind === "note" ? "em" : "span");
      element.className = "preview-text";
      element.textContent = shown.text;
    }
    if (shown && shown.more) {
      var more = document.createElement("em");
      more.textContent = " (+" + shown.more + " more)";
      var both = document.createElement("span");
      both.append(element, more);
      return both;
    }
    return element;
  }

  var LISTED = ["reasons", "status", "in_baseline", "given_label",
                "given_class", "predicted_label", "predicted_class",
                "suggested_label", "suggested_class", "slice", "region",
                "fold"];

  function column(name) {
    var found = {title: name.replace(/_/g, " "), field: name,
                 formatter: textCell, headerFilter: "input"};
    if (name === "reasons") {
      found.headerFilter = "list";
      found.headerFilterParams = {values: data.reasons, clearable: true};
      found.headerFilterFunc = function (wanted, value) {
        return (value || []).indexOf(wanted) >= 0;
      };
      found.sorter = function (a, b) {
        return text(a).localeCompare(text(b));
      };
    } else if (LISTED.indexOf(name) >= 0) {
      found.headerFilter = "list";
      found.headerFilterParams = {valuesLookup: true, clearable: true,
                                  sort: "asc"};
      found.headerFilterFunc = "=";
    } else if (name !== "id") {
      found.sorter = "number";
      found.headerFilterPlaceholder = "\u2265";
      found.headerFilterFunc = function (wanted, value) {
        var bound = parseFloat(wanted);
        return isNaN(bound) || Number(value) >= bound;
      };
    }
    return found;
  }

  function flaggedRows() {
    var r = data.rows;
    var element = document.getElementById("flagged");
    if (!element || !r.values.length) return;
    var rows = r.values.map(function (values, i) {
      var row = {_row: i};
      r.columns.forEach(function (name, j) { row[name] = values[j]; });
      r.inputs.forEach(function (name, j) {
        row["_preview_" + j] = r.previews.length ? r.previews[i][j] : null;
      });
      return row;
    });
    var columns = r.columns.map(column);
    if (!r.note) {
      r.inputs.forEach(function (name, j) {
        columns.push({title: name, field: "_preview_" + j,
                      formatter: previewCell, headerSort: false});
      });
    }
    table = new Tabulator(element, {
      data: rows, index: "_row", columns: columns,
      layout: "fitDataStretch",
      pagination: true, paginationSize: 25,
      paginationSizeSelector: [25, 100, 500], paginationCounter: "rows",
      initialSort: [{column: "score", dir: "desc"}]
    });
    document.querySelectorAll("button[data-status]").forEach(function (b) {
      b.addEventListener("click", function () {
        table.setHeaderFilterValue("status", b.dataset.status);
        document.getElementById("flagged-examples").scrollIntoView();
      });
    });
    document.getElementById("clear-pair").addEventListener("click", clearPair);
  }

  function filterPair(given, suggested, givenLabel, suggestedLabel, count) {
    if (!table) return;
    table.setFilter([{field: "given_label", type: "=", value: given},
                     {field: "suggested_label", type: "=", value: suggested}]);
    document.getElementById("pair-given").textContent = givenLabel;
    document.getElementById("pair-suggested").textContent = suggestedLabel;
    var listed = table.getDataCount("active");
    document.getElementById("pair-count").textContent =
        count === undefined || listed >= count ? "" :
        " (" + listed + " of its " + count + " label issues are among the" +
        " rows listed here; every one is in flagged/)";
    document.getElementById("pair-filter").hidden = false;
    document.getElementById("flagged-examples").scrollIntoView();
  }

  function clearPair() {
    table.clearFilter();
    document.getElementById("pair-filter").hidden = true;
  }

  histogram();
  heatMap();
  dataMap();
  heldoutLoss();
  flaggedRows();
  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (id) { charts[id].resize(); });
  });
  // For scripts and tests that drive the page.
  window.lossauditReport = {charts: charts, table: function () { return table; },
                            filterPair: filterPair, clearPair: clearPair};
})();
