"""The addresses of a microscope site: where each page and image lives, relative to the site's
folder. Every other module asks here, so an address is spelled once and stays stable.

    index.html                        the model page
    kvis-microscope.json, survey.npz  the manifest and the survey (for --resume)
    assets/style.css, site.js, search-index.js
    layers/<layer path>.html          a layer page (a nested path makes folders)
    layers/<layer path>/<unit>.html   a unit page
    layers/<layer path>/<unit>/       its images: max-<seed>.png (and the mean activation it
                                      reaches, max-<seed>.txt), examples.png, patch.png
    layers/<layer path>/filters.png   the first conv layer's filters, on the first layer's page
    classes/<k>.html                  a class page
"""

from pathlib import PurePosixPath
from urllib.parse import quote

INDEX = "index.html"
MANIFEST = "kvis-microscope.json"
SURVEY = "survey.npz"
STYLE = "assets/style.css"
SCRIPT = "assets/site.js"
SEARCH_INDEX = "assets/search-index.js"
FOLDERS = ("assets", "layers", "classes")  # what --overwrite removes, with the files above
EXAMPLES = "examples.png"
PATCH = "patch.png"
FILTERS = "filters.png"


def layer_page(layer):
    """'layers/block3_pool.html'."""
    return f"layers/{layer}.html"


def unit_folder(layer):
    """'layers/block3_pool': the folder of a layer's unit pages."""
    return f"layers/{layer}"


def unit_page(layer, channel):
    """'layers/block3_pool/12.html'."""
    return f"{unit_folder(layer)}/{int(channel)}.html"


def unit_image(layer, channel, name):
    """'layers/block3_pool/12/examples.png': one of a unit's images (`EXAMPLES`, `PATCH`,
    `maximization(seed)`)."""
    return f"{unit_folder(layer)}/{int(channel)}/{name}"


def maximization(seed):
    """The file name of a unit's maximization image from one seed: 'max-0.png'."""
    return f"max-{int(seed)}.png"


def maximization_score(seed):
    """The file holding the mean activation that image reached: 'max-0.txt' (written first:
    where the image exists, so does its score)."""
    return f"max-{int(seed)}.txt"


def layer_image(layer, name):
    """'layers/block1_conv1/filters.png': an image of the layer page."""
    return f"{unit_folder(layer)}/{name}"


def class_page(index):
    """'classes/3.html'."""
    return f"classes/{int(index)}.html"


def root_of(page):
    """The relative way from `page` up to the site's folder: '' for index.html, '../../' for
    layers/block3_pool/12.html."""
    return "../" * (len(PurePosixPath(page).parts) - 1)


def href(page, target):
    """The link from `page` to `target` (both relative to the site's folder), URL-quoted."""
    return quote(root_of(page) + target)
