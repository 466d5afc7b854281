"""The site's style sheet, its small script and its search index: plain CSS and vanilla
JavaScript written by kvis, no framework, nothing fetched. The index is a script that sets a
global (`window.KVIS_SEARCH`): a browser refuses `fetch()` of `file:` URLs but runs
`<script src>` from disk.

The script gives every page a search box (a unit by `layer:unit`, a layer, a concept or a class
by name), `j`/`k` or the arrow keys for the next/previous unit (the page's `<link rel="next">`
and `rel="prev"`), and on a layer page the sorting and filtering of its tiles.
"""

import json

STYLE = """\
body { font: 15px/1.5 system-ui, sans-serif; color: #1d1d1f; margin: 0; background: #fafafa; }
header.site { background: #fff; border-bottom: 1px solid #ddd; padding: 8px 24px;
              display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
header.site .home { font-weight: 600; text-decoration: none; color: inherit; }
.crumbs { color: #555; }
.search { position: relative; margin-left: auto; }
.search input { width: 300px; font: inherit; padding: 3px 8px; }
.search ol { position: absolute; right: 0; z-index: 2; margin: 2px 0 0; padding: 4px 0;
             list-style: none; background: #fff; border: 1px solid #ccc; min-width: 300px;
             max-height: 420px; overflow: auto; }
.search ol:empty { display: none; }
.search li a { display: block; padding: 2px 10px; text-decoration: none; color: inherit; }
.search li a:hover, .search li a.chosen { background: #e8f0fe; }
.search li small { color: #666; }
main { max-width: 1100px; margin: 0 auto; padding: 0 24px 48px; }
h1 { font-size: 24px; margin: 20px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-top: 8px; border-top: 1px solid #ddd; }
.notes, figcaption, .meta { color: #555; font-size: 13px; }
.warning { background: #fff4e5; border-left: 4px solid #e8a33d; padding: 6px 12px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; padding: 2px 12px 2px 0; border-bottom: 1px solid #eee; }
td.number, th.number { text-align: right; }
figure { margin: 12px 0; display: inline-block; vertical-align: top; }
img.pixels { image-rendering: pixelated; }
img.max { width: 160px; height: 160px; border: 1px solid #ddd; background: #fff; }
img.examples { max-width: 100%; width: 540px; height: auto; }
img.filters { max-width: 100%; height: auto; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 1fr));
         gap: 10px; }
.tile { display: block; background: #fff; border: 1px solid #e3e3e3; padding: 4px;
        text-decoration: none; color: inherit; font-size: 12px; }
.tile:hover { border-color: #6a9be6; }
.tile .pair { display: flex; gap: 2px; }
.tile img { width: 58px; height: 58px; background: #eee; }
.tile .missing { width: 58px; height: 58px; background: #f1f1f1; }
.tile.dead { opacity: 0.5; }
.wires { display: flex; flex-wrap: wrap; gap: 8px; }
.wire { display: block; text-align: center; font-size: 12px; text-decoration: none;
        color: inherit; background: #fff; border: 1px solid #e3e3e3; padding: 3px; }
.wire img { width: 64px; height: 64px; display: block; }
.controls { margin: 8px 0 12px; display: flex; gap: 16px; }
nav.steps { margin: 8px 0; display: flex; gap: 16px; }
svg.histogram rect { fill: #4a78c2; }
svg.histogram text { font: 11px system-ui, sans-serif; fill: #444; }
"""

SCRIPT = """\
(function () {
  "use strict";
  var root = document.body.getAttribute("data-root") || "";
  var index = window.KVIS_SEARCH || {layers: [], concepts: [], classes: []};

  function unit(layer, channel, note) {
    var found = index.layers[layer];
    return [found[0] + ":" + channel, note, found[2] + "/" + channel + ".html"];
  }

  function find(query) {
    var q = query.trim().toLowerCase(), found = [];
    if (!q) { return found; }
    var colon = q.lastIndexOf(":");
    if (colon > 0 && /^\\d+$/.test(q.slice(colon + 1))) {
      var name = q.slice(0, colon), channel = Number(q.slice(colon + 1));
      index.layers.forEach(function (layer, i) {
        var path = layer[0].toLowerCase();
        if ((path === name || path.endsWith("/" + name)) && channel < layer[3]) {
          found.push(unit(i, channel, "unit"));
        }
      });
      return found;
    }
    index.layers.forEach(function (layer) {
      if (layer[0].toLowerCase().indexOf(q) >= 0) {
        found.push([layer[0], "layer of " + layer[3] + " units", layer[1]]);
      }
    });
    index.classes.forEach(function (cls) {
      if (cls[1].toLowerCase().indexOf(q) >= 0) {
        found.push([cls[1], "class " + cls[0], cls[2]]);
      }
    });
    index.concepts.filter(function (entry) {
      return entry[2].toLowerCase().indexOf(q) >= 0;
    }).sort(function (a, b) { return b[3] - a[3]; }).forEach(function (entry) {
      found.push(unit(entry[0], entry[1], entry[2] + " (IoU " + entry[3].toFixed(3) + ")"));
    });
    return found;
  }

  var box = document.getElementById("search");
  var list = document.getElementById("search-results");
  function show() {
    list.textContent = "";
    find(box.value).slice(0, 30).forEach(function (hit, i) {
      var item = document.createElement("li"), link = document.createElement("a");
      var note = document.createElement("small");
      link.href = root + hit[2];
      link.textContent = hit[0] + " ";
      note.textContent = hit[1];
      link.appendChild(note);
      if (i === 0) { link.className = "chosen"; }
      item.appendChild(link);
      list.appendChild(item);
    });
  }
  if (box && list) {
    box.addEventListener("input", show);
    box.addEventListener("keydown", function (event) {
      var first = list.querySelector("a");
      if (event.key === "Enter" && first) { window.location.href = first.href; }
      if (event.key === "Escape") { box.value = ""; show(); }
    });
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey ||
        (target && /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName))) { return; }
    var rel = {j: "next", ArrowRight: "next", k: "prev", ArrowLeft: "prev"}[event.key];
    var link = rel && document.querySelector('link[rel="' + rel + '"]');
    if (link) { window.location.href = link.href; }
    if (event.key === "/" && box) { event.preventDefault(); box.focus(); }
  });

  var tiles = document.getElementById("tiles");
  var sort = document.getElementById("sort"), filter = document.getElementById("filter");
  function arrange() {
    var key = sort.value, keep = filter.value;
    var all = Array.prototype.slice.call(tiles.children);
    all.sort(function (a, b) {
      if (key === "channel") { return Number(a.dataset.channel) - Number(b.dataset.channel); }
      var x = Number(a.dataset[key] || -1), y = Number(b.dataset[key] || -1);
      return y - x || Number(a.dataset.channel) - Number(b.dataset.channel);
    });
    all.forEach(function (tile) {
      tile.hidden = !(keep === "all" || (keep === "concept" ? tile.dataset.concept :
                                         tile.dataset[keep] === "1"));
      tiles.appendChild(tile);
    });
    var shown = all.filter(function (tile) { return !tile.hidden; }).length;
    document.getElementById("shown").textContent = shown + " of " + all.length + " units";
  }
  if (tiles && sort && filter) {
    sort.addEventListener("change", arrange);
    filter.addEventListener("change", arrange);
    arrange();
  }
})();
"""


def search_index(layers, concepts, classes):
    """The search index as a script: `window.KVIS_SEARCH = {...};`.

    Args:
        layers: `[(path, page, units folder, units)]`: each surveyed layer, the addresses of
            its page and of the folder of its unit pages (URL-quoted, relative to the site's
            folder), and its number of units.
        concepts: `[(layer number, channel, concept, IoU)]`: the units with a best concept.
        classes: `[(index, name, page)]`.

    Returns:
        The script's text (deterministic: the same site gives the same bytes).
    """
    data = {"layers": [[path, page, folder, int(units)] for path, page, folder, units in layers],
            "concepts": [[int(i), int(c), str(concept), round(float(iou), 6)]
                         for i, c, concept, iou in concepts],
            "classes": [[int(k), str(name), page] for k, name, page in classes]}
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True).replace("<", "\\u003c")
    return f"window.KVIS_SEARCH = {text};\n"
