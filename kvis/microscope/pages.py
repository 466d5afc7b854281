"""The HTML of every page of a microscope: pure functions, numbers in (`kvis.microscope.facts`),
a string out. Everything shown is escaped, every link is relative (the site opens from disk and
can be moved), and nothing depends on the time, so a rebuild gives the same bytes. Each page
also carries the numbers it shows as JSON (`<script type="application/json" id="kvis-data">`),
for tests and for anyone who wants them.
"""

import html
import json

from kvis.microscope import layout

SORTS = (("channel", "unit"), ("mean", "mean activation"), ("peak", "maximum"),
         ("active", "fraction active"), ("iou", "dissection IoU"))
FILTERS = (("all", "all units"), ("dead", "dead"), ("rare", "rarely active"),
           ("concept", "with a concept"))


def frame(page, title, body, *, crumbs=(), prev=None, next=None, data=None):
    """A whole page: head, the site's header with the search box, `body`, its JSON data.

    Args:
        page: the page's address in the site (`kvis.microscope.layout`), for relative links.
        title: the page's title.
        body: the page's HTML, inside <main>.
        crumbs: `[(text, address)]` the pages above this one.
        prev, next: the addresses of the previous and next pages (units of a layer), for the
            keyboard (`j`/`k`, arrows).
        data: the numbers the page shows, embedded as JSON.
    """
    link = [f'<link rel="{rel}" href="{layout.href(page, target)}">'
            for rel, target in (("prev", prev), ("next", next)) if target]
    trail = "".join(f' › <a href="{layout.href(page, target)}">{_e(text)}</a>'
                    for text, target in crumbs)
    json_block = "" if data is None else (
        '<script type="application/json" id="kvis-data">'
        + json.dumps(data, ensure_ascii=True).replace("<", "\\u003c") + "</script>\n")
    root = layout.root_of(page)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>"
        '<link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="{layout.href(page, layout.STYLE)}">{"".join(link)}'
        f'</head>\n<body data-root="{_e(root)}">\n<header class="site">'
        f'<a class="home" href="{layout.href(page, layout.INDEX)}">kvis microscope</a>'
        f'<span class="crumbs">{trail}</span>'
        '<div class="search"><input type="search" id="search" autocomplete="off" '
        'placeholder="layer:unit, a concept or a class" aria-label="search">'
        '<ol id="search-results"></ol></div></header>\n'
        f"<main>\n{body}\n</main>\n{json_block}"
        f'<script src="{layout.href(page, layout.SEARCH_INDEX)}"></script>'
        f'<script src="{layout.href(page, layout.SCRIPT)}"></script>\n</body></html>\n')


def model_page(info):
    """The site's index: the model, the data, every layer (surveyed ones linked, with their
    dead and rare counts) and the class pages.

    Args:
        info: {"model", "summary": [(name, value)], "random_weights", "layers": [{"path",
            "type", "shape", "params", "field_size", "field_stride", "surveyed", "channels",
            "dead", "rare"}], "classes": [{"class", "name"}]}.
    """
    page = layout.INDEX
    rows = []
    for row in info["layers"]:
        name = (f'<a href="{layout.href(page, layout.layer_page(row["path"]))}">'
                f'{_e(row["path"])}</a>' if row["surveyed"] else _e(row["path"]))
        counts = ((row["channels"], row["dead"], row["rare"]) if row["surveyed"]
                  else ("", "", ""))
        rows.append("<tr>" + f"<td>{name}</td>" + "".join(
            f'<td{" class=number" if i in (3, 6, 7, 8) else ""}>{_e(cell)}</td>'
            for i, cell in enumerate(
                (row["type"], row["shape"], f'{row["params"]:,}', row["field_size"],
                 row["field_stride"], *counts), start=1)) + "</tr>")
    body = [f"<h1>{_e(info['model'])}</h1>", _warning(info),
            _table(("", ""), info["summary"]),
            "<h2>Layers</h2>",
            '<p class="notes">Every layer in order, nested models opened up; the surveyed '
            "layers link to their units. Receptive field: the input patch one unit sees "
            "(size) and the step between neighbouring units (stride), in input pixels. Dead: "
            "never above 0 over the data; rare: above 0 at under 1% of positions.</p>",
            "<table><thead><tr><th>layer</th><th>type</th><th>output shape</th>"
            '<th class="number">parameters</th><th>RF size</th><th>RF stride</th>'
            '<th class="number">units</th><th class="number">dead</th>'
            '<th class="number">rare</th></tr></thead><tbody>' + "".join(rows)
            + "</tbody></table>"]
    if info["classes"]:
        items = "".join(f'<li><a href="{layout.href(page, layout.class_page(c["class"]))}">'
                        f'{_e(c["name"])}</a></li>' for c in info["classes"])
        body += ["<h2>Classes</h2>", f'<ol start="0" class="classes">{items}</ol>']
    return frame(page, f"kvis microscope: {info['model']}", "\n".join(body), data=info)


def layer_page(facts, *, info, maximized, prev=None, next=None):
    """A layer: every unit as a tile (its first maximization image where computed, its
    strongest dataset patch), sortable and filterable in the browser.

    Args:
        facts: `kvis.microscope.facts.layer_facts`.
        info: {"shape", "field", "fed_by" (a sentence), "filters" (the first conv layer's
            path, or None), "spectrum" (a sentence or None), "model"}.
        maximized: the channels whose maximization image exists.
        prev, next: the previous and next surveyed layers.
    """
    layer = facts["layer"]
    page = layout.layer_page(layer)
    prev, next = prev and layout.layer_page(prev), next and layout.layer_page(next)
    tiles = [_tile(page, layer, tile, tile["channel"] in maximized) for tile in facts["tiles"]]
    sorts = "".join(f'<option value="{v}">{_e(t)}</option>' for v, t in SORTS)
    filters = "".join(f'<option value="{v}">{_e(t)}</option>' for v, t in FILTERS)
    body = [f"<h1>{_e(layer)}</h1>",
            f'<p class="meta">output {_e(info["shape"])} · receptive field {_e(info["field"])} · '
            f'{len(tiles)} units, {facts["dead"]} dead, {facts["rare"]} rarely active · '
            f'{_e(info["fed_by"])}</p>',
            _steps(page, prev, next, "layer"),
            '<div class="controls"><label>sort by <select id="sort">' + sorts
            + '</select></label><label>show <select id="filter">' + filters
            + '</select></label><span id="shown" class="notes"></span></div>',
            '<p class="notes">Each tile: the image that most excites the unit (activation '
            "maximization, where computed) and the dataset patch that excites it most.</p>",
            f'<div class="tiles" id="tiles">{"".join(tiles)}</div>']
    if info.get("filters"):
        source = layout.href(page, layout.layer_image(layer, layout.FILTERS))
        body += [f"<h2>Filters of {_e(info['filters'])}</h2>",
                 f'<figure><img class="filters" src="{source}" alt="filters of '
                 f'{_e(info["filters"])}"><figcaption>The first conv layer\'s kernels, all on '
                 "one scale (mid-gray is zero).</figcaption></figure>"]
    if info.get("spectrum"):
        body.append(f'<p class="notes">Frequency content: {_e(info["spectrum"])}.</p>')
    return frame(page, f"{info['model']} · {layer}", "\n".join(body),
                 crumbs=[(layer, page)], prev=prev, next=next, data=facts)


def unit_page(facts, *, model, steps, examples):
    """One unit: its maximization images, its top dataset examples, the histogram and
    statistics of its activation, its classes and concepts, what feeds it and what it feeds.

    Args:
        facts: `kvis.microscope.facts.unit_facts`, with "maximization": `[{"seed", "score"}]`
            the seeds whose maximization image exists and the mean activation each reaches.
        model: the model's label.
        steps: the gradient steps of those images.
        examples: what the examples image shows, in words (`examples_caption`).
    """
    layer, channel = facts["layer"], facts["channel"]
    page = layout.unit_page(layer, channel)
    stats = facts["stats"]
    flags = "".join(f' <span class="warning">{word}</span>' for word, on in
                    (("dead", stats["dead"]), ("rarely active", stats["rare"])) if on)
    body = [f"<h1>{_e(layer)} unit {channel}{flags}</h1>",
            f'<p class="meta">unit {channel} of {facts["channels"]} · maximum '
            f'{_n(stats["peak"])} · mean {_n(stats["mean"])} · active at '
            f'{stats["fraction_active"]:.2%} of {stats["positions"]:,} positions</p>',
            _steps(page, channel > 0 and layout.unit_page(layer, channel - 1),
                   channel + 1 < facts["channels"] and layout.unit_page(layer, channel + 1),
                   "unit"),
            "<h2>Activation maximization</h2>",
            _maximization(page, layer, channel, facts["maximization"], steps),
            f"<h2>Top {len(facts['top'])} dataset examples</h2>", _examples(page, facts, examples),
            "<h2>Activation over the dataset</h2>", histogram_svg(facts["histogram"]),
            _table(("statistic", "value"), [
                ("mean activation", _n(stats["mean"])), ("maximum", _n(stats["peak"])),
                ("fraction of positions active", f"{stats['fraction_active']:.4%}"),
                ("dead (never above 0)", "yes" if stats["dead"] else "no"),
                ("rarely active (under 1%)", "yes" if stats["rare"] else "no")])]
    if facts["classes"]:
        body += ["<h2>Classes that activate it most</h2>",
                 _table(("class", "mean peak", "images"), [
                     (c["name"], _n(c["mean_peak"]), f"{c['images']:,}")
                     for c in facts["classes"]])]
    if facts["concepts"]:
        body += ["<h2>Concepts (network dissection)</h2>",
                 _table(("concept", "IoU"), [(c["concept"], f"{c['iou']:.4f}")
                                             for c in facts["concepts"]])]
    body += ["<h2>Fed by</h2>", _wires(page, facts["fed_by"], "into it"),
             "<h2>Feeds</h2>", _wires(page, facts["feeds"], "out of it")]
    return frame(page, f"{model} · {layer}:{channel}", "\n".join(body),
                 crumbs=[(layer, layout.layer_page(layer)), (f"unit {channel}", page)],
                 prev=channel > 0 and layout.unit_page(layer, channel - 1),
                 next=channel + 1 < facts["channels"] and layout.unit_page(layer, channel + 1),
                 data=facts)


def class_page(facts, *, model):
    """One class: the units that contribute most to its score, and per layer the units its
    images activate most."""
    page = layout.class_page(facts["class"])
    body = [f"<h1>{_e(facts['name'])}</h1>",
            f'<p class="meta">class {facts["class"]} · {facts["images"]:,} images of the data '
            "carry its label</p>"]
    if facts["contributions"]:
        body += ["<h2>The units that contribute most to its score</h2>",
                 '<p class="notes">Contribution: the unit\'s activation times the gradient of '
                 "the class's logit, summed over positions, averaged over the class's images "
                 "(for a global-average-pooling head: weight times mean activation).</p>",
                 _unit_list(page, [(u["layer"], u["channel"], f"{u['contribution']:.4g}")
                                   for u in facts["contributions"]])]
    for layer, units in facts["active"].items():
        body += [f"<h2>{_e(layer)}: the units its images activate most</h2>",
                 _unit_list(page, [(layer, u["channel"], f"mean peak {u['mean_peak']:.4g}")
                                   for u in units])]
    return frame(page, f"{model} · {facts['name']}", "\n".join(body),
                 crumbs=[(facts["name"], page)], data=facts)


def histogram_svg(histogram, *, width=420, height=120):
    """A histogram as an inline SVG: bars of `counts` over `edges`, labelled with the range and
    the tallest count."""
    counts, edges = histogram["counts"], histogram["edges"]
    tallest = max(max(counts), 1)
    left, bottom, plot_width, plot_height = 40, height - 20, width - 50, height - 30
    step = plot_width / len(counts)
    bars = "".join(
        f'<rect x="{left + i * step:.1f}" y="{bottom - plot_height * c / tallest:.1f}" '
        f'width="{max(step - 1, 1):.1f}" height="{plot_height * c / tallest:.1f}"></rect>'
        for i, c in enumerate(counts))
    labels = (f'<text x="{left}" y="{height - 5}">{_n(edges[0])}</text>'
              f'<text x="{left + plot_width}" y="{height - 5}" text-anchor="end">'
              f'{_n(edges[-1])}</text>'
              f'<text x="{left - 4}" y="{bottom - plot_height + 10}" text-anchor="end">'
              f"{tallest:,}</text>"
              f'<text x="{left - 4}" y="{bottom}" text-anchor="end">0</text>')
    return (f'<figure><svg class="histogram" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="histogram">{bars}{labels}'
            "</svg><figcaption>Each image's largest activation of the unit: how many images "
            "(height) reach each level.</figcaption></figure>")


def _maximization(page, layer, channel, made, steps):
    if not made:
        return ('<p class="notes">Not computed (yet): this build left the unit out of '
                "activation maximization (<code>--maximize</code>), or it is still running "
                "(<code>--resume</code> finishes it).</p>")
    figures = "".join(
        f'<figure><img class="max pixels" '
        f'src="{_image(page, layer, channel, layout.maximization(s))}" '
        f'alt="maximization, seed {s}"><figcaption>seed {s}: {_n(score)}</figcaption></figure>'
        for s, score in ((m["seed"], m["score"]) for m in made))
    return (figures + '<p class="notes">Under each image, the mean activation it reaches (0: '
            f"the unit never rose above 0 from that noise). From noise, {steps} steps of "
            "gradient ascent on Fourier-space, colour-decorrelated pixels with jitter, scaling "
            "and rotation (Olah et al. 2017); each seed starts from other noise, so a unit that "
            "responds to several things can show several.</p>")


def _examples(page, facts, caption):
    layer, channel = facts["layer"], facts["channel"]
    figure = (f'<figure><img class="examples pixels" '
              f'src="{_image(page, layer, channel, layout.EXAMPLES)}" alt="top examples">'
              f"<figcaption>{_e(caption)}: each activation's deconvnet projection (left block) "
              "beside the image patch under its receptive field (right block), in rank order "
              "(Zeiler &amp; Fergus 2014).</figcaption></figure>")
    return figure + _table(("rank", "activation", "image", "position (row, col)", "label"), [
        (e["rank"] + 1, _n(e["value"]), e["name"], f"({e['row']}, {e['col']})",
         e["label"] or "") for e in facts["top"]])


def _wires(page, wires, direction):
    if wires is None:
        return ('<p class="notes">Not known: this is the first surveyed layer or the last, or '
                "the layers between branch or merge (residual blocks, concatenation) or mix "
                "units in another way.</p>")
    via = ", ".join(wires["convs"]) or "no convolution (units pass one to one)"
    note = (f'<p class="notes">{_e(wires["layer"])}, the units with the largest weight norms '
            f"{direction}, through {_e(via)}.</p>")
    if not wires["units"]:
        return note + '<p class="notes">None: every weight is 0.</p>'
    return note + _unit_list(page, [(wires["layer"], u["channel"], f"{u['strength']:.4g}")
                                    for u in wires["units"]])


def _unit_list(page, units):
    """Thumbnails (each unit's strongest dataset patch) that link to the units' pages."""
    return '<div class="wires">' + "".join(
        f'<a class="wire" href="{layout.href(page, layout.unit_page(layer, c))}">'
        f'<img class="pixels" src="{_image(page, layer, c, layout.PATCH)}" alt="{_e(layer)}:{c}">'
        f"{_e(layer)}:{c}<br>{_e(value)}</a>" for layer, c, value in units) + "</div>"


def _tile(page, layer, tile, maximized):
    channel = tile["channel"]
    first = (f'<img class="pixels" src="{_image(page, layer, channel, layout.maximization(0))}" '
             f'alt="maximization">' if maximized else '<span class="missing"></span>')
    attributes = {"channel": channel, "mean": f"{tile['mean']:.6g}",
                  "peak": f"{tile['peak']:.6g}", "active": f"{tile['fraction_active']:.6g}",
                  "iou": "" if tile["iou"] is None else f"{tile['iou']:.6g}",
                  "dead": int(tile["dead"]), "rare": int(tile["rare"]),
                  "concept": tile["concept"] or ""}
    data = " ".join(f'data-{key}="{_e(value)}"' for key, value in attributes.items())
    concept = f" · {_e(tile['concept'])}" if tile["concept"] else ""
    return (f'<a class="tile{" dead" if tile["dead"] else ""}" {data} '
            f'href="{layout.href(page, layout.unit_page(layer, channel))}">'
            f'<span class="pair">{first}<img class="pixels" '
            f'src="{_image(page, layer, channel, layout.PATCH)}" alt="strongest patch"></span>'
            f"#{channel} · max {_n(tile['peak'])}{concept}</a>")


def _steps(page, prev, next, what):
    links = [f'<a href="{layout.href(page, target)}">{label}</a>'
             for target, label in ((prev, f"← previous {what} (k)"),
                                   (next, f"next {what} (j) →")) if target]
    return f'<nav class="steps">{"".join(links)}</nav>' if links else ""


def _warning(info):
    if not info.get("random_weights"):
        return ""
    return ('<p class="warning">The weights of this model are random: what its units respond '
            "to says nothing about a trained model.</p>")


def _table(header, rows):
    head = ("<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>"
            if any(header) else "")
    cells = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>"
                    for row in rows)
    return f"<table>{head}<tbody>{cells}</tbody></table>"


def _image(page, layer, channel, name):
    return layout.href(page, layout.unit_image(layer, channel, name))


def _n(value):
    return f"{value:.4g}"


def _e(value):
    return html.escape(str(value))
