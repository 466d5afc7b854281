"""What each page of a microscope shows, as plain JSON-ready numbers: computed from a
`kvis.microscope.survey.Survey` and the model's wiring with NumPy, no HTML and no files
(`kvis.microscope.pages` renders them; each page also carries them as JSON).

Definitions (docs/microscope.md):
- a unit's statistics are the scan's (`LayerStats`: mean, peak, fraction active, dead, rare);
- its histogram is that of each image's largest activation of the unit (`Survey.peaks`);
- its top classes rank the dataset's classes by the mean of those peaks over their images;
- "fed by" ranks the units of the previous surveyed layer by `Wiring.strength[:, unit]`,
  "feeds" the units of the next by `strength[unit, :]` (sums of products of kernel norms);
- a class page ranks the last surveyed layer's units by `Survey.contributions[layer][class]`
  (activation times the gradient of the class logit, over the class's images).
"""

import numpy as np

from kvis.microscope.wiring import strongest_links

WIRES = 8       # units listed under "fed by" and "feeds"
CLASSES = 5     # top classes of a unit
CONCEPTS = 3    # best concepts of a unit
CLASS_UNITS = 16  # units of a class page, per list
BINS = 24       # histogram bins


def unit_facts(survey, layer, channel, *, names, labels, class_names, into=None,
               out_of=None):
    """Everything a unit page shows.

    Args:
        survey: a `Survey`.
        layer: one of `survey.layers`.
        channel: the unit.
        names: the dataset's image names by id (`ImageSource.names`).
        labels: the dataset's class of each image id (`ImageSource.labels`), or None.
        class_names: a name per class index (None: "#k").
        into: the `Wiring` from the previous surveyed layer into `layer` (None: none known).
        out_of: the `Wiring` from `layer` into the next surveyed layer.

    Returns:
        A dict of plain numbers and strings (see the keys below).
    """
    top, stats = survey.scan.top[layer], survey.scan.stats[layer]
    examples = []
    for rank in range(top.values.shape[1]):
        value, image = float(top.values[channel, rank]), int(top.images[channel, rank])
        if not np.isfinite(value):
            continue
        label = None if labels is None or labels[image] < 0 else int(labels[image])
        examples.append({"rank": rank, "value": value, "image": image, "name": names[image],
                         "row": int(top.positions[channel, rank, 0]),
                         "col": int(top.positions[channel, rank, 1]),
                         "label": None if label is None else class_name(class_names, label)})
    peaks = survey.peaks[layer][:, channel]
    counts, edges = np.histogram(peaks, bins=BINS)
    return {
        "layer": layer, "channel": int(channel), "channels": len(stats.peak),
        "top": examples,
        "stats": {"mean": float(stats.mean[channel]), "peak": float(stats.peak[channel]),
                  "fraction_active": float(stats.fraction_active[channel]),
                  "dead": bool(channel in stats.dead), "rare": bool(channel in stats.rare),
                  "positions": int(stats.positions)},
        "histogram": {"counts": counts.tolist(), "edges": [float(e) for e in edges]},
        "classes": _top_classes(peaks, survey.labels, class_names),
        "fed_by": _wires(into, channel, incoming=True),
        "feeds": _wires(out_of, channel, incoming=False),
        "concepts": _concepts(survey.dissection, layer, channel),
    }


def layer_facts(survey, layer):
    """Every unit of a layer as a tile's numbers: mean, peak, fraction active, dead, rare, best
    concept and its IoU (None without a dissection)."""
    stats = survey.scan.stats[layer]
    dead, rare = set(stats.dead.tolist()), set(stats.rare.tolist())
    tiles = []
    for channel in range(len(stats.peak)):
        best = _concepts(survey.dissection, layer, channel)[:1]
        tiles.append({"channel": channel, "mean": float(stats.mean[channel]),
                      "peak": float(stats.peak[channel]),
                      "fraction_active": float(stats.fraction_active[channel]),
                      "dead": channel in dead, "rare": channel in rare,
                      "concept": best[0]["concept"] if best else None,
                      "iou": best[0]["iou"] if best else None})
    return {"layer": layer, "tiles": tiles, "dead": len(dead), "rare": len(rare)}


def class_facts(survey, index, *, class_names):
    """What a class page shows: the units of the last surveyed layer that contribute most to the
    class (`Survey.contributions`), and per surveyed layer the units whose peaks are largest on
    average over the class's images."""
    labels = survey.labels
    mine = np.flatnonzero(labels == index) if labels is not None else np.zeros(0, int)
    contributing = []
    for layer, values in survey.contributions.items():
        order = np.argsort(-values[index], kind="stable")[:CLASS_UNITS]
        contributing += [{"layer": layer, "channel": int(c),
                          "contribution": float(values[index, c])} for c in order]
    active = {}
    for layer in survey.layers:
        if not len(mine):
            break
        means = survey.peaks[layer][mine].mean(axis=0)
        order = np.argsort(-means, kind="stable")[:CLASS_UNITS]
        active[layer] = [{"channel": int(c), "mean_peak": float(means[c])} for c in order]
    return {"class": int(index), "name": class_name(class_names, index), "images": len(mine),
            "contributions": contributing, "active": active}


def class_count(survey):
    """How many classes get a page: the rows of the contributions, else the labels' classes
    (0 without labels)."""
    for values in survey.contributions.values():
        return len(values)
    if survey.labels is None or not (survey.labels >= 0).any():
        return 0
    return int(survey.labels.max()) + 1


def best_class(survey, layer, channel, class_names):
    """The name of the class whose images activate a unit most on average (None without
    labels): what the search finds a unit by."""
    found = _top_classes(survey.peaks[layer][:, channel], survey.labels, class_names)
    return found[0]["name"] if found else None


def _top_classes(peaks, labels, class_names):
    """The classes by the mean peak over their images, largest first (ties: lower index)."""
    if labels is None:
        return []
    known = labels >= 0
    classes = np.unique(labels[known])
    means = [float(peaks[known & (labels == k)].mean()) for k in classes]
    order = sorted(range(len(classes)), key=lambda i: (-means[i], classes[i]))[:CLASSES]
    return [{"class": int(classes[i]), "name": class_name(class_names, int(classes[i])),
             "mean_peak": means[i], "images": int((labels == classes[i]).sum())} for i in order]


def _wires(found, channel, *, incoming):
    """The strongest units on one side of a wiring: {"layer", "units": [{"channel",
    "strength"}], "convs"}; None where no wiring is known (the first layer, a branch)."""
    if found is None:
        return None
    links = strongest_links(found.strength, channel, WIRES, incoming=incoming)
    return {"layer": found.source if incoming else found.layer, "convs": list(found.convs),
            "units": [{"channel": c, "strength": s} for c, s in links]}


def _concepts(dissection, layer, channel):
    """A unit's best concepts by IoU (only those above 0), best first."""
    if dissection is None or layer not in dissection.layers:
        return []
    which = np.flatnonzero((np.asarray(dissection.layers)[dissection.unit_layers] == layer)
                           & (dissection.channels == channel))
    if not len(which):
        return []
    iou = dissection.iou[which[0]]
    order = [int(k) for k in np.argsort(-iou, kind="stable")[:CONCEPTS] if iou[k] > 0]
    return [{"concept": dissection.concepts[k], "iou": float(iou[k])} for k in order]


def class_name(class_names, index):
    """The name of a class index: from `class_names`, else "#index"."""
    if class_names is not None and 0 <= index < len(class_names):
        return str(class_names[index])
    return f"#{index}"
