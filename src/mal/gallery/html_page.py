"""The review page's HTML: one file holding its CSS, its JavaScript and the instance data (as JSON).

The page needs nothing from the network. One card per instance zooms into its box on the shared image thumbnail
and lists category, score and IoU; the cards sort by worst IoU, smallest score or image. The sort order can also be
chosen with the URL fragment (`index.html#sort=score`), which is how the tests drive it.
"""

from __future__ import annotations

import json
from typing import Any


def render_page(entries: list[dict[str, Any]], num_images: int) -> str:
    """The page's HTML with the entries (one per instance, as `write_gallery` builds them) embedded."""
    # "<" escaped so no label text can close the script element; the result is still valid JSON.
    data = json.dumps({"entries": entries, "num_images": num_images}).replace("<", "\\u003c")
    return _PAGE_TEMPLATE.replace("__DATA__", data)


_PAGE_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MAL masks for review</title>
<script>
  // Any script error lands in the page, so a reviewer (and the tests) can see it.
  function reportError(text) {
    var box = document.getElementById("errors");
    if (!box) { window.__pendingErrors = (window.__pendingErrors || []).concat([text]); return; }
    var line = document.createElement("div");
    line.className = "error";
    line.textContent = text;
    box.appendChild(line);
  }
  window.onerror = function (message, source, line) { reportError(message + " (line " + line + ")"); };
  window.addEventListener("unhandledrejection", function (event) { reportError(String(event.reason)); });
</script>
<style>
  body { font-family: system-ui, sans-serif; margin: 16px; background: #f4f4f4; color: #222; }
  header { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; margin-bottom: 12px; }
  #errors .error { color: #b00020; font-weight: bold; }
  #cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
  .instance-card { background: #fff; border-radius: 6px; padding: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.2); }
  .view { position: relative; width: 200px; height: 200px; overflow: hidden; background-color: #000;
          background-repeat: no-repeat; image-rendering: pixelated; margin: 0 auto; }
  .view .box { position: absolute; border: 1px dashed #fff; box-sizing: border-box; }
  .meta { font-size: 13px; line-height: 1.45; margin-top: 6px; word-break: break-all; }
  .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
  .low { color: #b00020; font-weight: bold; }
</style>
</head>
<body>
<header>
  <h1 style="font-size: 20px; margin: 0">MAL masks for review</h1>
  <label>Sort by
    <select id="sort">
      <option value="iou">worst IoU first</option>
      <option value="score">smallest score first</option>
      <option value="image">image</option>
    </select>
  </label>
  <span id="summary"></span>
</header>
<div id="errors"></div>
<div id="cards"></div>
<script type="application/json" id="gallery-data">__DATA__</script>
<script>
(function () {
  var data = JSON.parse(document.getElementById("gallery-data").textContent);
  var entries = data.entries;
  var VIEW = 200;
  (window.__pendingErrors || []).forEach(reportError);

  // Missing values sort last, whatever the key.
  function ascending(key) {
    return function (a, b) {
      var x = a[key], y = b[key];
      if (x === null || x === undefined) { return (y === null || y === undefined) ? 0 : 1; }
      if (y === null || y === undefined) { return -1; }
      return x - y;
    };
  }
  var ORDERS = {
    iou: function (a, b) { return ascending("iou")(a, b) || ascending("score")(a, b); },
    score: function (a, b) { return ascending("score")(a, b) || ascending("iou")(a, b); },
    image: function (a, b) { return a.image_order - b.image_order; }
  };

  function fmt(value) { return (value === null || value === undefined) ? "n/a" : value.toFixed(3); }

  function view(entry) {
    // Zoom into the box and its surroundings (1.5x, at least 24 thumbnail pixels) on the shared thumbnail.
    var b = entry.box;
    var side = Math.max(b[2], b[3], 16) * 1.5;
    var cx = b[0] + b[2] / 2, cy = b[1] + b[3] / 2;
    var zoom = VIEW / side;
    var left = cx - side / 2, top = cy - side / 2;
    var element = document.createElement("a");
    element.className = "view";
    element.href = entry.thumb;
    element.target = "_blank";
    element.style.backgroundImage = "url('" + entry.thumb + "')";
    element.style.backgroundSize = (entry.thumb_w * zoom) + "px " + (entry.thumb_h * zoom) + "px";
    element.style.backgroundPosition = (-left * zoom) + "px " + (-top * zoom) + "px";
    element.style.display = "block";
    var outline = document.createElement("div");
    outline.className = "box";
    outline.style.left = ((b[0] - left) * zoom) + "px";
    outline.style.top = ((b[1] - top) * zoom) + "px";
    outline.style.width = (b[2] * zoom) + "px";
    outline.style.height = (b[3] * zoom) + "px";
    element.appendChild(outline);
    return element;
  }

  function line(parent, label, value, low) {
    var row = document.createElement("div");
    row.textContent = label + ": " + value;
    if (low) { row.className = "low"; }
    parent.appendChild(row);
  }

  function card(entry) {
    var element = document.createElement("div");
    element.className = "instance-card";
    element.dataset.annId = String(entry.ann_id);
    element.dataset.imageId = String(entry.image_id);
    element.appendChild(view(entry));
    var meta = document.createElement("div");
    meta.className = "meta";
    var title = document.createElement("div");
    var swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = entry.colour;
    title.appendChild(swatch);
    title.appendChild(document.createTextNode(entry.category + (entry.has_mask ? "" : " (no mask)")));
    meta.appendChild(title);
    line(meta, "score", fmt(entry.score), entry.score !== null && entry.score < 0.5);
    if (entry.iou !== null && entry.iou !== undefined) { line(meta, "IoU", fmt(entry.iou), entry.iou < 0.5); }
    line(meta, "image", entry.file);
    line(meta, "annotation", String(entry.ann_id));
    element.appendChild(meta);
    return element;
  }

  function render(order) {
    var sorted = entries.slice().sort(ORDERS[order]);
    var cards = document.getElementById("cards");
    cards.replaceChildren.apply(cards, sorted.map(card));
    document.getElementById("sort").value = order;
    document.getElementById("summary").textContent =
      entries.length + " instances in " + data.num_images + " images";
  }

  var select = document.getElementById("sort");
  var hasIou = entries.some(function (e) { return e.iou !== null && e.iou !== undefined; });
  var requested = (location.hash.match(/sort=(\\w+)/) || [])[1];
  var initial = ORDERS[requested] ? requested : (hasIou ? "iou" : "score");
  select.addEventListener("change", function () {
    history.replaceState(null, "", "#sort=" + select.value);
    render(select.value);
  });
  render(initial);
})();
</script>
</body>
</html>
"""
