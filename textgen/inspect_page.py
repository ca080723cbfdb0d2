"""The self-contained HTML page of ``textgen inspect``: markup, style and script.

``inspect_report.render_html`` fills in one placeholder, ``__TRACE_DATA__``, with
the trace as JSON in which ``<``, ``>`` and ``&`` are written as ``\\u`` escapes,
so no token (``</script>``, ``<!--`` ...) can end the data block early. Token
text reaches the page only through ``textContent`` and ``title``, never as markup.

The page loads nothing: its Content-Security-Policy forbids every fetch, and it
uses only local fonts. Its script draws the colours from the palette in the
data, with the same arithmetic as ``inspect_report.token_colour`` (a test
compares the two in a real browser).

State lives in three pickers (layer, quantity, unit). Everything that changes
the view, including the URL hash (``#layer=1&quantity=forget&unit=7``) and the
"jump to unit" buttons, sets a picker's value and then runs that picker's
change handler, so there is one code path to get right.
"""

PAGE_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>textgen inspect</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 1.5em;
         color: #222; background: #fff; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  .meta, .note { color: #555; margin: .2em 0; }
  .controls { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: center; margin: .8em 0;
              padding: .6em .8em; background: #f4f4f6; border-radius: 6px; }
  .controls label { font-weight: 600; }
  select, input { font: inherit; margin-left: .3em; }
  input#unit { width: 5em; }
  input.invalid { outline: 2px solid #c00; }
  .legend { display: inline-flex; align-items: center; gap: .4em; font-size: .9em; }
  .legend .bar { width: 160px; height: 12px; border: 1px solid #aaa; display: inline-block; }
  .jumps { margin: .4em 0; font-size: .9em; }
  .jumps button { font: inherit; font-size: .85em; margin: 0 .15em; padding: 0 .4em; cursor: pointer; }
  .jumps button.current { font-weight: 700; outline: 2px solid #333; }
  #status { font-weight: 600; margin: .6em 0 .3em; }
  #text { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space: pre-wrap;
          word-break: break-all; tab-size: 4; line-height: 1.7; padding: .8em; border: 1px solid #ddd; border-radius: 6px; }
  .tok { border-radius: 2px; }
  .tok.gen { text-decoration: underline dashed #888; text-underline-offset: 3px; }
  .tok:hover { outline: 1px solid #000; }
  .ctl { color: #999; }
  .boundary { color: #888; font-size: .8em; font-family: system-ui, sans-serif; padding: 0 .3em; }
  #hover { min-height: 1.4em; font-size: .9em; margin-top: .6em;
           font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
</style>
</head>
<body>
<h1>textgen inspect</h1>
<p class="meta" id="meta"></p>
<div class="controls">
  <label>Layer <select id="layer"></select></label>
  <label>Quantity <select id="quantity"></select></label>
  <label>Unit <input id="unit" type="number" min="0" step="1"></label>
  <span class="legend"><span id="legend-low"></span><span class="bar" id="legend-bar"></span>
    <span id="legend-high"></span></span>
</div>
<div class="jumps">Most variable: <span id="jump-variable"></span></div>
<div class="jumps">Most active: <span id="jump-active"></span></div>
<p id="status"></p>
<div id="text"></div>
<p id="hover">Hover over a token to see its values.</p>
<p class="note">Dashed underline: text the model generated; the rest is the prompt.</p>
<noscript><p>This page needs JavaScript to colour the text.</p></noscript>
<script type="application/json" id="trace-data">__TRACE_DATA__</script>
<script>
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("trace-data").textContent);
  const palette = data.palette;
  const diverging = new Set(palette.diverging);
  const layerPicker = document.getElementById("layer");
  const quantityPicker = document.getElementById("quantity");
  const unitPicker = document.getElementById("unit");
  const textBox = document.getElementById("text");
  const state = { layer: data.initial.layer, quantity: data.initial.quantity, unit: data.initial.unit };
  const spans = [];
  let ready = false;  // the URL hash is read once at start, before any picker writes it back

  // Control characters are shown as visible symbols; a newline keeps its line break after its symbol.
  function visible(token) {
    let out = "";
    for (const ch of token) {
      const code = ch.codePointAt(0);
      if (ch === "\n") out += "\u21b5\n";
      else if (ch === "\t") out += "\u21e5\t";
      else if (code < 0x20) out += String.fromCodePoint(0x2400 + code);
      else if (code === 0x7f) out += "\u2421";
      else out += ch;
    }
    return out === "" ? "\u2205" : out;
  }

  // The twin of inspect_report.token_colour: keep the arithmetic identical.
  function mix(from, to, t) {
    return [0, 1, 2].map(function (i) { return Math.round(from[i] + (to[i] - from[i]) * t); });
  }
  function scaleOf(quantity, values) {
    if (!diverging.has(quantity)) return 1;
    let scale = 1;
    for (const v of values) if (v !== null && Math.abs(v) > scale) scale = Math.abs(v);
    return scale;
  }
  function colourOf(value, quantity, scale) {
    if (value === null) return { rgb: palette.missing, strength: 0 };
    if (diverging.has(quantity)) {
      const t = Math.max(-1, Math.min(1, value / scale));
      return { rgb: t >= 0 ? mix(palette.white, palette.positive, t) : mix(palette.white, palette.negative, -t),
               strength: Math.abs(t) };
    }
    const t = Math.max(0, Math.min(1, value));
    return { rgb: mix(palette.white, palette.gate, t), strength: t };
  }
  function css(rgb) { return "rgb(" + rgb[0] + ", " + rgb[1] + ", " + rgb[2] + ")"; }
  function fmt(v) { return v === null ? "not finite" : v.toFixed(6); }
  function unitsIn(layer) { return data.layers[layer][data.quantities[layer][0]][0].length; }
  function columnOf(layer, quantity, unit) {
    return data.layers[layer][quantity].map(function (row) { return row[unit]; });
  }

  function fillOptions(select, values, label) {
    select.textContent = "";
    for (const value of values) {
      const option = document.createElement("option");
      option.value = String(value);
      option.textContent = label(value);
      select.appendChild(option);
    }
  }

  function buildText() {
    data.tokens.forEach(function (token, i) {
      if (i === data.generated_from && i > 0) {
        const mark = document.createElement("span");
        mark.className = "boundary";
        mark.textContent = "\u25b8 generated:";
        textBox.appendChild(mark);
      }
      const span = document.createElement("span");
      span.className = i >= data.generated_from ? "tok gen" : "tok";
      span.dataset.t = String(i);
      span.textContent = visible(token);
      textBox.appendChild(span);
      spans.push(span);
    });
  }

  function jumpButtons(holder, units) {
    holder.textContent = "";
    for (const unit of units) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = String(unit);
      button.dataset.unit = String(unit);
      button.addEventListener("click", function () { unitPicker.value = String(unit); onUnitChange(); });
      holder.appendChild(button);
    }
  }

  function recolour() {
    const { layer, quantity, unit } = state;
    const values = columnOf(layer, quantity, unit);
    const scale = scaleOf(quantity, values);
    spans.forEach(function (span, i) {
      const colour = colourOf(values[i], quantity, scale);
      span.style.backgroundColor = css(colour.rgb);
      span.style.color = colour.strength > 0.6 ? "rgb(255, 255, 255)" : "";
      span.title = "#" + i + " " + JSON.stringify(data.tokens[i]) + "  " + quantity + " = " + fmt(values[i]);
    });
    const low = diverging.has(quantity) ? -scale : 0;
    const lowColour = diverging.has(quantity) ? palette.negative : palette.white;
    const highColour = diverging.has(quantity) ? palette.positive : palette.gate;
    const stops = diverging.has(quantity) ? [lowColour, palette.white, highColour] : [lowColour, highColour];
    document.getElementById("legend-bar").style.background =
      "linear-gradient(to right, " + stops.map(css).join(", ") + ")";
    document.getElementById("legend-low").textContent = String(+low.toFixed(3));
    document.getElementById("legend-high").textContent = String(+scale.toFixed(3));
    const ranking = data.rankings[layer][quantity];
    jumpButtons(document.getElementById("jump-variable"), ranking.variable);
    jumpButtons(document.getElementById("jump-active"), ranking.active);
    for (const button of document.querySelectorAll(".jumps button")) {
      button.classList.toggle("current", Number(button.dataset.unit) === unit);
    }
    document.getElementById("status").textContent =
      "layer " + layer + " \u00b7 " + quantity + " \u00b7 unit " + unit + " of " + unitsIn(layer);
    textBox.dataset.layer = String(layer);
    textBox.dataset.quantity = quantity;
    textBox.dataset.unit = String(unit);
    if (ready) {
      try {
        history.replaceState(null, "", "#layer=" + layer + "&quantity=" + quantity + "&unit=" + unit);
      } catch (error) { /* some browsers refuse history changes on file: pages; the view is what matters */ }
    }
  }

  function onLayerChange() {
    const layer = Number(layerPicker.value);
    if (layerPicker.value === "" || !(layer >= 0 && layer < data.layers.length)) {
      layerPicker.value = String(state.layer);
      return;
    }
    state.layer = layer;
    const present = data.quantities[layer];
    fillOptions(quantityPicker, present, function (q) { return q; });
    if (!present.includes(state.quantity)) state.quantity = present.includes("hidden") ? "hidden" : present[0];
    quantityPicker.value = state.quantity;
    unitPicker.max = String(unitsIn(layer) - 1);
    if (state.unit >= unitsIn(layer)) state.unit = data.rankings[layer][state.quantity].variable[0];
    unitPicker.value = String(state.unit);
    recolour();
  }
  function onQuantityChange() {
    if (!data.quantities[state.layer].includes(quantityPicker.value)) {
      quantityPicker.value = state.quantity;
      return;
    }
    state.quantity = quantityPicker.value;
    recolour();
  }
  function onUnitChange() {
    const text = unitPicker.value.trim();
    const unit = Number(text);
    const valid = /^\d+$/.test(text) && unit < unitsIn(state.layer);
    unitPicker.classList.toggle("invalid", !valid);
    if (!valid) return;
    state.unit = unit;
    recolour();
  }

  function applyHash() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (params.has("layer")) { layerPicker.value = params.get("layer"); onLayerChange(); }
    if (params.has("quantity")) { quantityPicker.value = params.get("quantity"); onQuantityChange(); }
    if (params.has("unit")) { unitPicker.value = params.get("unit"); onUnitChange(); }
  }

  function showHover(event) {
    const span = event.target.closest(".tok");
    if (!span) return;
    const i = Number(span.dataset.t);
    const parts = data.quantities[state.layer].map(function (q) {
      return q + " " + fmt(data.layers[state.layer][q][i][state.unit]);
    });
    document.getElementById("hover").textContent = "token #" + i + " " + JSON.stringify(data.tokens[i]) +
      (i >= data.generated_from ? " (generated)" : " (prompt)") + ", layer " + state.layer + " unit " +
      state.unit + ": " + parts.join(" \u00b7 ");
  }

  const generated = data.tokens.length - data.generated_from;
  document.getElementById("meta").textContent = data.cell + " \u00b7 " + data.layers.length + " layer(s) \u00d7 " +
    unitsIn(0) + " units \u00b7 " + data.tokens.length + " tokens (" + data.generated_from + " prompt, " +
    generated + " generated)";
  fillOptions(layerPicker, data.layers.map(function (_, i) { return i; }), function (i) { return "layer " + i; });
  buildText();
  layerPicker.value = String(state.layer);
  onLayerChange();
  quantityPicker.value = state.quantity;
  onQuantityChange();
  layerPicker.addEventListener("change", onLayerChange);
  quantityPicker.addEventListener("change", onQuantityChange);
  unitPicker.addEventListener("change", onUnitChange);
  unitPicker.addEventListener("input", onUnitChange);
  textBox.addEventListener("mouseover", showHover);
  window.addEventListener("hashchange", applyHash);
  applyHash();
  ready = true;
})();
</script>
</body>
</html>
"""
