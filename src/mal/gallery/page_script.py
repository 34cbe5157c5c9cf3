"""The review page's JavaScript: filter and sort the cards, show one page of them, review with the keyboard, keep
the decisions in localStorage, and download them (a COCO file of the accepted masks, the rejected ids).

State in the URL fragment (`#sort=score&dir=desc&class=cat&score=0.2-0.8&size=small,medium&iou=-0.5
&status=undecided&page=3&per=100`), so a view can be bookmarked and the tests can open one. The list of cards is
recomputed only when the view changes, never on a decision, so a page does not shift under the reviewer.
Decisions are one character per card ("0" undecided, "1" accepted, "2" rejected) under a key named after the
label file's content, so two galleries opened from disk (one origin for every file:// page) never mix.
"""

from __future__ import annotations

PAGE_SCRIPT = r"""
(function () {
  "use strict";
  (window.__pendingErrors || []).forEach(reportError);
  var DATA = window.MAL_GALLERY;
  if (!DATA) {
    reportError("data.js did not load: keep index.html, data.js and thumbs/ together in one folder.");
    return;
  }
  var COL = DATA.columns;
  var N = COL.ann.length;
  var SIZES = ["small", "medium", "large"];
  var UNDECIDED = 0, ACCEPTED = 1, REJECTED = 2;
  var STORE_KEY = "mal-gallery:" + DATA.identity;
  var $ = function (id) { return document.getElementById(id); };

  function numbers(values) {
    var out = new Float64Array(values.length);
    for (var i = 0; i < values.length; i++) { out[i] = values[i] === null ? NaN : values[i]; }
    return out;
  }
  var SCORE = numbers(COL.score), IOU = numbers(COL.iou), QUALITY = numbers(COL.quality);
  var AREA = numbers(COL.area);
  // Classes sort by name; the rank of each category index in that order.
  var CLASS_RANK = DATA.categories.map(function (name, index) { return [name, index]; })
    .sort(function (a, b) { return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1]; })
    .reduce(function (rank, pair, position) { rank[pair[1]] = position; return rank; }, []);
  var KEYS = {
    quality: QUALITY, score: SCORE, iou: IOU, size: AREA,
    "class": numbers(COL.category.map(function (c) { return CLASS_RANK[c]; })),
    image: null  // the cards are written image by image: the card number is the order
  };

  // ------------------------------------------------------------------ decisions (localStorage)
  var decisions = new Uint8Array(N);
  var storageOk = true;
  function loadDecisions() {
    var saved = null;
    try { saved = window.localStorage.getItem(STORE_KEY); } catch (error) { storageOk = false; }
    if (saved && saved.length === N) {
      for (var i = 0; i < N; i++) { decisions[i] = saved.charCodeAt(i) - 48; }
    }
  }
  function saveDecisions() {
    var chars = new Uint8Array(N);
    for (var i = 0; i < N; i++) { chars[i] = 48 + decisions[i]; }
    try {
      window.localStorage.setItem(STORE_KEY, new TextDecoder().decode(chars));
    } catch (error) {
      storageOk = false;
    }
    $("notice").textContent = storageOk ? "" :
      "This browser does not let the page keep decisions; download them before closing it.";
  }

  // ------------------------------------------------------------------ the view (URL fragment)
  var view = {};
  function parseRange(text) {
    var parts = (text || "").split("-");
    var low = parts[0] === "" ? null : Number(parts[0]);
    var high = parts.length < 2 || parts[1] === "" ? null : Number(parts[1]);
    return [low === null || isNaN(low) ? null : low, high === null || isNaN(high) ? null : high];
  }
  function formatRange(range) {
    if (range[0] === null && range[1] === null) { return null; }
    return (range[0] === null ? "" : range[0]) + "-" + (range[1] === null ? "" : range[1]);
  }
  function readFragment() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    var sort = params.get("sort");
    var fallback = DATA.has_quality ? "quality" : "score";
    if (!Object.prototype.hasOwnProperty.call(KEYS, sort) || (sort === "iou" && !DATA.has_iou) ||
        (sort === "quality" && !DATA.has_quality)) { sort = fallback; }
    var sizes = params.get("size");
    var per = parseInt(params.get("per"), 10);
    view = {
      sort: sort,
      desc: params.get("dir") === "desc",
      category: params.get("class") || "",
      score: parseRange(params.get("score")),
      iou: parseRange(params.get("iou")),
      sizes: sizes === null ? SIZES.slice() : sizes.split(",").filter(function (s) { return SIZES.indexOf(s) >= 0; }),
      status: ["undecided", "accepted", "rejected"].indexOf(params.get("status")) >= 0 ? params.get("status") : "all",
      page: Math.max(1, parseInt(params.get("page"), 10) || 1),
      per: [50, 100, 200].indexOf(per) >= 0 ? per : parseInt($("per-page").value, 10)
    };
  }
  function writeFragment() {
    var params = new URLSearchParams();
    params.set("sort", view.sort);
    if (view.desc) { params.set("dir", "desc"); }
    if (view.category) { params.set("class", view.category); }
    if (formatRange(view.score)) { params.set("score", formatRange(view.score)); }
    if (formatRange(view.iou)) { params.set("iou", formatRange(view.iou)); }
    if (view.sizes.length < 3) { params.set("size", view.sizes.join(",")); }
    if (view.status !== "all") { params.set("status", view.status); }
    params.set("page", String(view.page));
    params.set("per", String(view.per));
    history.replaceState(null, "", "#" + params.toString());
  }

  // ------------------------------------------------------------------ filter and sort
  var list = new Int32Array(0);
  function inRange(value, range) {
    if (range[0] === null && range[1] === null) { return true; }
    if (isNaN(value)) { return false; }
    return (range[0] === null || value >= range[0]) && (range[1] === null || value <= range[1]);
  }
  function computeList() {
    var categoryIndex = view.category ? DATA.categories.indexOf(view.category) : -1;
    var sizeOk = SIZES.map(function (name) { return view.sizes.indexOf(name) >= 0; });
    var wanted = { all: -1, undecided: UNDECIDED, accepted: ACCEPTED, rejected: REJECTED }[view.status];
    var kept = [];
    for (var i = 0; i < N; i++) {
      if (view.category && COL.category[i] !== categoryIndex) { continue; }
      if (!sizeOk[COL.size[i]]) { continue; }
      if (!inRange(SCORE[i], view.score) || !inRange(IOU[i], view.iou)) { continue; }
      if (wanted >= 0 && decisions[i] !== wanted) { continue; }
      kept.push(i);
    }
    var key = KEYS[view.sort], sign = view.desc ? -1 : 1;
    kept.sort(function (a, b) {
      if (key) {
        var x = key[a], y = key[b];
        // Missing values last, whichever the direction.
        if (isNaN(x) || isNaN(y)) { if (isNaN(x) !== isNaN(y)) { return isNaN(x) ? 1 : -1; } }
        else if (x !== y) { return sign * (x - y); }
      }
      return sign * (a - b);
    });
    list = Int32Array.from(kept);
  }
  function pageCount() { return Math.max(1, Math.ceil(list.length / view.per)); }

  // ------------------------------------------------------------------ cards
  var focus = 0;  // position of the focused card on the page
  var pageCards = [];
  function fmt(value) { return isNaN(value) ? "n/a" : value.toFixed(3); }
  // Card i is picture number slot[i] (from the left) of strip sheet[i]: see crop_jobs.sheet_name.
  function sheetPath(i) { var s = COL.sheet[i]; return DATA.crops.dir + "/" + Math.floor(s / 1000) + "/" + s + ".jpg"; }
  function line(parent, text, className) {
    var row = document.createElement("div");
    row.textContent = text;
    if (className) { row.className = className; }
    parent.appendChild(row);
    return row;
  }
  function makeCard(i, position) {
    var card = document.createElement("article");
    card.className = "card";
    card.setAttribute("role", "listitem");
    card.dataset.index = String(i);
    card.dataset.annId = String(COL.ann[i]);
    card.dataset.imageId = String(DATA.image_ids[COL.image[i]]);
    card.dataset.position = String(position);
    var picture = document.createElement("div");
    picture.className = "picture";
    picture.setAttribute("role", "img");
    picture.setAttribute("aria-label", "annotation " + COL.ann[i]);
    picture.style.backgroundImage = "url('" + sheetPath(i) + "')";
    picture.style.backgroundPosition = (-COL.slot[i] * DATA.crops.size) + "px 0";
    card.appendChild(picture);
    var meta = document.createElement("div");
    meta.className = "meta";
    line(meta, DATA.categories[COL.category[i]] +
      (!COL.mask[i] ? " (no mask)" : COL.area[i] === 0 ? " (empty mask)" : ""), "title");
    var status = document.createElement("span");
    status.className = "status";
    card.appendChild(status);
    line(meta, "score " + fmt(SCORE[i]), SCORE[i] < 0.5 ? "low" : "");
    if (DATA.has_iou) { line(meta, "IoU " + fmt(IOU[i]), IOU[i] < 0.5 ? "low" : ""); }
    if (DATA.has_quality) { line(meta, "quality " + fmt(QUALITY[i]), QUALITY[i] < 0.5 ? "low" : ""); }
    line(meta, SIZES[COL.size[i]] + ", " + COL.area[i] + " px");
    line(meta, DATA.files[COL.image[i]] + " #" + COL.ann[i]).title = DATA.files[COL.image[i]];
    card.appendChild(meta);
    paint(card, i);
    card.addEventListener("click", function () { setFocus(position); });
    return card;
  }
  function paint(card, i) {
    card.classList.toggle("accepted", decisions[i] === ACCEPTED);
    card.classList.toggle("rejected", decisions[i] === REJECTED);
    card.dataset.decision = ["undecided", "accepted", "rejected"][decisions[i]];
  }
  function render() {
    view.page = Math.min(Math.max(view.page, 1), pageCount());
    var start = (view.page - 1) * view.per;
    var stop = Math.min(start + view.per, list.length);
    pageCards = [];
    for (var p = start; p < stop; p++) { pageCards.push(makeCard(list[p], p - start)); }
    var container = $("cards");
    container.replaceChildren.apply(container, pageCards);
    if (!pageCards.length) {
      var empty = document.createElement("div");
      empty.className = "empty";
      empty.textContent = "No masks match these filters.";
      container.appendChild(empty);
    }
    $("page-label").textContent = "page " + view.page + " of " + pageCount();
    $("prev-page").disabled = view.page <= 1;
    $("next-page").disabled = view.page >= pageCount();
    // Cards scrolled into view stop below the sticky header, not under it.
    document.documentElement.style.setProperty("--header", document.querySelector("header").offsetHeight + "px");
    focus = Math.min(Math.max(focus, 0), Math.max(pageCards.length - 1, 0));
    setFocus(focus, true);
    updateCounts();
    writeFragment();
  }
  function setFocus(position, quiet) {
    if (pageCards[focus]) { pageCards[focus].classList.remove("focused"); }
    focus = position;
    var card = pageCards[focus];
    if (!card) { return; }
    card.classList.add("focused");
    if (!quiet) { card.scrollIntoView({ block: "nearest" }); }
  }
  function updateCounts() {
    var tally = [0, 0, 0];
    for (var i = 0; i < N; i++) { tally[decisions[i]] += 1; }
    $("summary").textContent = N.toLocaleString("en") + " masks on " + DATA.files.length.toLocaleString("en") +
      " images" + (DATA.source ? " from " + DATA.source : "");
    $("counts").textContent = list.length.toLocaleString("en") + " match; accepted " + tally[ACCEPTED] +
      ", rejected " + tally[REJECTED] + ", undecided " + tally[UNDECIDED];
  }

  // ------------------------------------------------------------------ review
  var undoStack = [];
  function decide(indices, value) {
    if (!indices.length) { return; }
    undoStack.push({ indices: indices, before: indices.map(function (i) { return decisions[i]; }) });
    indices.forEach(function (i) { decisions[i] = value; });
    saveDecisions();
    repaint(indices);
  }
  function repaint(indices) {
    pageCards.forEach(function (card) {
      var i = parseInt(card.dataset.index, 10);
      if (indices.indexOf(i) >= 0) { paint(card, i); }
    });
    updateCounts();
  }
  function decideFocused(value) {
    var card = pageCards[focus];
    if (!card) { return; }
    decide([parseInt(card.dataset.index, 10)], value);
    step(1);
  }
  function acceptRestOfPage() {
    decide(pageCards.map(function (card) { return parseInt(card.dataset.index, 10); })
      .filter(function (i) { return decisions[i] === UNDECIDED; }), ACCEPTED);
  }
  function undo() {
    var last = undoStack.pop();
    if (!last) { return; }
    last.indices.forEach(function (i, k) { decisions[i] = last.before[k]; });
    saveDecisions();
    var where = list.indexOf(last.indices[0]);
    if (where >= 0) {
      var page = Math.floor(where / view.per) + 1;
      if (page !== view.page) { view.page = page; focus = where % view.per; render(); }
      else { repaint(last.indices); setFocus(where % view.per); }
    } else {
      repaint(last.indices);
    }
  }
  function step(delta) {
    var target = focus + delta;
    if (target >= pageCards.length) {
      if (view.page < pageCount()) { view.page += 1; focus = 0; render(); scrollTo(0, 0); }
      return;
    }
    if (target < 0) {
      if (view.page > 1) { view.page -= 1; focus = view.per - 1; render(); setFocus(focus); }
      return;
    }
    setFocus(target);
  }
  function columns() {
    var top = pageCards.length ? pageCards[0].offsetTop : 0;
    var count = 0;
    while (count < pageCards.length && pageCards[count].offsetTop === top) { count += 1; }
    return Math.max(count, 1);
  }
  function turnPage(delta) {
    var page = Math.min(Math.max(view.page + delta, 1), pageCount());
    if (page === view.page) { return; }
    view.page = page;
    focus = 0;
    render();
    scrollTo(0, 0);
  }

  // ------------------------------------------------------------------ export
  function download(name, text) {
    var url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    var link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
  }
  function decidedInFileOrder(value) {
    var picked = [];
    for (var i = 0; i < N; i++) { if (decisions[i] === value) { picked.push(i); } }
    return picked.sort(function (a, b) { return COL.position[a] - COL.position[b]; });
  }
  var stem = (DATA.source || "labels").replace(/\.json$/i, "");
  function exportAccepted() {
    var records = JSON.parse(window.MAL_GALLERY_RECORDS);
    var coco = {};
    Object.keys(records.base).forEach(function (key) { coco[key] = records.base[key]; });
    coco.annotations = decidedInFileOrder(ACCEPTED).map(function (i) { return records.annotations[i]; });
    download(stem + ".accepted.json", JSON.stringify(coco));
  }
  function exportRejected() {
    download(stem + ".rejected_ids.json",
      JSON.stringify(decidedInFileOrder(REJECTED).map(function (i) { return COL.ann[i]; })));
  }

  // ------------------------------------------------------------------ controls
  function syncControls() {
    $("sort").value = view.sort;
    $("direction").textContent = view.desc ? "descending" : "ascending";
    $("class").value = view.category;
    $("score-min").value = view.score[0] === null ? "" : view.score[0];
    $("score-max").value = view.score[1] === null ? "" : view.score[1];
    $("iou-min").value = view.iou[0] === null ? "" : view.iou[0];
    $("iou-max").value = view.iou[1] === null ? "" : view.iou[1];
    Array.prototype.forEach.call($("sizes").querySelectorAll("input"), function (box) {
      box.checked = view.sizes.indexOf(box.value) >= 0;
    });
    $("status").value = view.status;
    $("per-page").value = String(view.per);
  }
  function number(id) { var text = $(id).value; return text === "" || isNaN(Number(text)) ? null : Number(text); }
  function fromControls(event) {
    view.sort = $("sort").value;
    view.category = $("class").value;
    view.score = [number("score-min"), number("score-max")];
    view.iou = [number("iou-min"), number("iou-max")];
    view.sizes = Array.prototype.filter.call($("sizes").querySelectorAll("input"), function (box) {
      return box.checked;
    }).map(function (box) { return box.value; });
    view.status = $("status").value;
    view.per = parseInt($("per-page").value, 10);
    view.page = 1;
    focus = 0;
    computeList();
    render();
    scrollTo(0, 0);
    // Back to the grid, so the review keys work at once.
    if (event && event.target && event.target.tagName === "SELECT") { event.target.blur(); }
  }
  function setUpControls() {
    DATA.categories.forEach(function (name) {
      var option = document.createElement("option");
      option.value = option.textContent = name;
      $("class").appendChild(option);
    });
    if (!DATA.has_quality) { $("sort").querySelector("option[value=quality]").remove(); }
    if (!DATA.has_iou) {
      $("sort").querySelector("option[value=iou]").remove();
      $("iou-filter").hidden = true;
    }
    $("legend-truth").hidden = !DATA.has_truth;
    ["sort", "class", "score-min", "score-max", "iou-min", "iou-max", "status", "per-page"].forEach(function (id) {
      $(id).addEventListener("change", fromControls);
    });
    $("sizes").addEventListener("change", fromControls);
    $("direction").addEventListener("click", function () {
      view.desc = !view.desc; view.page = 1; focus = 0; syncControls(); computeList(); render();
    });
    $("prev-page").addEventListener("click", function () { turnPage(-1); });
    $("next-page").addEventListener("click", function () { turnPage(1); });
    $("export-accepted").addEventListener("click", exportAccepted);
    $("export-rejected").addEventListener("click", exportRejected);
    window.addEventListener("hashchange", function () {
      readFragment(); syncControls(); computeList(); render();
    });
    document.addEventListener("keydown", onKey);
  }
  function onKey(event) {
    var target = event.target || {};
    var typing = target.tagName === "SELECT" || target.tagName === "TEXTAREA" ||
      (target.tagName === "INPUT" && ["checkbox", "radio", "button"].indexOf(target.type) < 0);
    if (typing) {
      if (event.key === "Escape") { event.target.blur(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) {
      if ((event.ctrlKey || event.metaKey) && event.key === "z") { undo(); event.preventDefault(); }
      return;
    }
    var actions = {
      j: function () { step(1); }, ArrowRight: function () { step(1); },
      k: function () { step(-1); }, ArrowLeft: function () { step(-1); },
      ArrowDown: function () { step(columns()); }, ArrowUp: function () { step(-columns()); },
      a: function () { decideFocused(ACCEPTED); }, r: function () { decideFocused(REJECTED); },
      x: function () { decideFocused(UNDECIDED); },
      A: acceptRestOfPage,
      u: undo, z: undo,
      n: function () { turnPage(1); }, PageDown: function () { turnPage(1); },
      p: function () { turnPage(-1); }, PageUp: function () { turnPage(-1); }
    };
    var action = actions[event.key];
    if (action) { action(); event.preventDefault(); }
  }

  loadDecisions();
  if (!storageOk) { saveDecisions(); }
  readFragment();
  setUpControls();
  syncControls();
  computeList();
  render();
  document.documentElement.dataset.ready = "true";
  window.__malReadyAt = performance.now();
})();
"""
