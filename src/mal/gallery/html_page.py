"""The review page's index.html: its CSS and layout. The data comes from data.js (page_data), the behaviour from
page_script (both loaded by <script> tags, which work from disk where fetch() does not).

Only one page of cards is in the DOM at a time (at most 200), so the page stays fast for any number of masks.
"""

from __future__ import annotations

import html

from mal.gallery.crops import LABEL_HEX, TRUTH_HEX
from mal.gallery.page_data import DATA_FILE
from mal.gallery.page_script import PAGE_SCRIPT

PAGE_SIZES = (50, 100, 200)
DEFAULT_PAGE_SIZE = 100


def render_page(num_cards: int, num_images: int) -> str:
    """index.html for a gallery of num_cards masks on num_images images."""
    title = html.escape(f"MAL review: {num_cards:,} masks on {num_images:,} images")
    page_sizes = "".join(
        f'<option value="{size}"{" selected" if size == DEFAULT_PAGE_SIZE else ""}>{size}</option>'
        for size in PAGE_SIZES
    )
    return (
        _TEMPLATE.replace("__TITLE__", title)
        .replace("__PAGE_SIZES__", page_sizes)
        .replace("__DATA_FILE__", DATA_FILE)
        .replace("__LABEL__", LABEL_HEX)
        .replace("__TRUTH__", TRUTH_HEX)
        .replace("__SCRIPT__", PAGE_SCRIPT)
    )


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
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
  :root { --label: __LABEL__; --truth: __TRUTH__; --accept: #1a7f37; --reject: #cf222e; --focus: #0969da; }
  body { font-family: system-ui, sans-serif; margin: 0; background: #f4f4f4; color: #222; }
  header { position: sticky; top: 0; z-index: 1; background: #fff; padding: 8px 16px;
           box-shadow: 0 1px 4px rgba(0,0,0,.15); }
  header .row { display: flex; gap: 4px 12px; align-items: center; flex-wrap: wrap; margin: 4px 0; font-size: 13px; }
  h1 { font-size: 18px; margin: 0; }
  input[type=number] { width: 3.8em; }
  fieldset { border: 0; padding: 0; margin: 0; display: inline-flex; gap: 6px; }
  button { font: inherit; cursor: pointer; }
  #keys { display: block; color: #555; font-size: 13px; line-height: 1.8; }
  kbd { border: 1px solid #bbb; border-bottom-width: 2px; border-radius: 3px; padding: 0 4px; background: #fafafa;
        font-size: 12px; }
  .legend-label { color: var(--label); font-weight: bold; }
  .legend-truth { color: #0a9396; font-weight: bold; }
  #errors .error { color: #b00020; font-weight: bold; padding: 4px 16px; }
  #notice { color: #8a5a00; padding: 0 16px; }
  #cards { display: grid; grid-template-columns: repeat(auto-fill, 180px); gap: 10px; padding: 12px 16px;
           justify-content: start; }
  .card { background: #fff; border-radius: 6px; padding: 6px; box-shadow: 0 1px 3px rgba(0,0,0,.2);
          border: 3px solid transparent; cursor: pointer; scroll-margin: calc(var(--header, 0px) + 10px) 0 10px; }
  .picture { width: 160px; height: 160px; margin: 0 auto; background-color: #333; background-repeat: no-repeat; }
  .card.focused { border-color: var(--focus); box-shadow: 0 0 0 3px rgba(9,105,218,.35); }
  .card.accepted { background: #dafbe1; }
  .card.rejected { background: #ffebe9; }
  .card.accepted .status::before { content: "\\2713 accepted"; color: var(--accept); }
  .card.rejected .status::before { content: "\\2717 rejected"; color: var(--reject); }
  .card { position: relative; }
  .card.accepted .status, .card.rejected .status {
    position: absolute; top: 12px; right: 12px; background: rgba(255,255,255,.92); padding: 0 5px;
    border-radius: 3px; font-weight: bold; font-size: 12px; }
  .meta { font-size: 12px; line-height: 1.4; margin-top: 4px; width: 160px; margin-left: auto; margin-right: auto; }
  .meta div { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
  .meta .title { font-weight: bold; font-size: 13px; }
  .low { color: #b00020; font-weight: bold; }
  .empty { padding: 24px 16px; color: #555; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header>
  <div class="row">
    <h1>MAL review</h1>
    <span id="summary"></span>
    <span id="legend"><span class="legend-label">orange</span>: the label's mask<span id="legend-truth">,
      <span class="legend-truth">cyan</span>: the ground truth's outline</span></span>
  </div>
  <div class="row">
    <label>Sort by <select id="sort">
      <option value="quality">quality</option>
      <option value="score">score</option>
      <option value="iou">IoU</option>
      <option value="size">size</option>
      <option value="class">class</option>
      <option value="image">image</option>
    </select></label>
    <button id="direction" type="button" title="reverse the order">ascending</button>
    <label>Class <select id="class"><option value="">all</option></select></label>
    <label>Score <input id="score-min" type="number" min="0" max="1" step="0.05" placeholder="min">
      to <input id="score-max" type="number" min="0" max="1" step="0.05" placeholder="max"></label>
    <label id="iou-filter">IoU <input id="iou-min" type="number" min="0" max="1" step="0.05" placeholder="min">
      to <input id="iou-max" type="number" min="0" max="1" step="0.05" placeholder="max"></label>
    <fieldset id="sizes"><legend hidden>Size</legend>Size
      <label><input type="checkbox" value="small" checked> small</label>
      <label><input type="checkbox" value="medium" checked> medium</label>
      <label><input type="checkbox" value="large" checked> large</label>
    </fieldset>
    <label>Decision <select id="status">
      <option value="all">all</option><option value="undecided">undecided</option>
      <option value="accepted">accepted</option><option value="rejected">rejected</option>
    </select></label>
  </div>
  <div class="row">
    <button id="prev-page" type="button">&lsaquo; previous page</button>
    <span id="page-label"></span>
    <button id="next-page" type="button">next page &rsaquo;</button>
    <label>Per page <select id="per-page">__PAGE_SIZES__</select></label>
    <span id="counts"></span>
    <button id="export-accepted" type="button">Download accepted (COCO)</button>
    <button id="export-rejected" type="button">Download rejected ids</button>
  </div>
  <div id="keys" class="row">Keys: <kbd>j</kbd>/<kbd>&rarr;</kbd> next, <kbd>k</kbd>/<kbd>&larr;</kbd> previous,
    <kbd>&darr;</kbd>/<kbd>&uarr;</kbd> row, <kbd>a</kbd> accept, <kbd>r</kbd> reject, <kbd>x</kbd> undecided,
    <kbd>u</kbd>/<kbd>z</kbd> undo,
    <kbd>Shift</kbd>+<kbd>A</kbd> accept the rest of the page, <kbd>n</kbd>/<kbd>PgDn</kbd> next page,
    <kbd>p</kbd>/<kbd>PgUp</kbd> previous page</div>
</header>
<div id="errors"></div>
<div id="notice"></div>
<main id="cards" role="list" aria-label="masks"></main>
<script src="__DATA_FILE__"></script>
<script>
__SCRIPT__
</script>
</body>
</html>
"""
