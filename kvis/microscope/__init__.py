"""The microscope: a static website of every unit of a model, each on a page with a stable
address, that opens from disk (`kvis microscope MODEL DATA --out SITE`).

Its numbers come from one survey of the model over a dataset (`survey`: the dataset scan with
each unit's top images and statistics, every image's peak activation of every unit, the class
contributions of the last surveyed layer, dissection over concept data) and from the weights
(`wiring`: which units of the previous layer feed a unit, and which of the next it feeds).
`build` writes the site, `pages` and `assets` its HTML, CSS and JavaScript:

    SITE/index.html                          the model: its layers, with links
    SITE/layers/<layer path>.html            a layer: every unit as a tile
    SITE/layers/<layer path>/<unit>.html     a unit: what excites it, where, what feeds it
    SITE/classes/<k>.html                    a class: the units that contribute most to it
    SITE/survey.npz, kvis-microscope.json    the survey and the manifest (to resume a build)
"""
