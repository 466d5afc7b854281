"""A concept dataset for network dissection (`kvis.dataset.dissection`): images with a
per-pixel concept label map each, checked when opened and read a chunk at a time.

The format (a folder):
    concepts.txt      the name of concept i on line i, from 1 (label 0 is "no concept")
    images/NAME.png   the images (any format OpenCV reads: .png, .jpg, ...)
    masks/NAME.png    a single-channel uint8 PNG label map of the same height and width as
                      images/NAME.*: 0 = no concept, i = concept i
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvis.core.errors import KvisError
from kvis.core.images import read_file, read_image
from kvis.core.vocabulary import IMAGE_SUFFIXES


@dataclass(frozen=True)
class ConceptDataset:
    """A concept dataset on disk, checked: every image has a mask, every mask holds known labels.

    Images are read when needed (each pass streams them); masks were read once by
    `concept_dataset` to check them, and are read again by the second pass.

    Attributes:
        folder: the dataset folder.
        names: the image names (file stems), sorted.
        images: the image files, one per name.
        masks: the mask files, one per name.
        sizes: (height, width) of each mask (and of its image).
        concepts: the concept names; label i is `concepts[i - 1]`.
    """

    folder: Path
    names: tuple
    images: tuple
    masks: tuple
    sizes: tuple
    concepts: tuple

    def __len__(self):
        return len(self.names)


def concept_dataset(folder):
    """Open a concept dataset folder (the format is in this module's docstring).

    Args:
        folder: a folder with `concepts.txt`, `images/` and `masks/`.

    Returns:
        A `ConceptDataset`.

    Raises:
        KvisError (one line): a missing folder or concepts.txt, no images, an image without a
            mask or a mask without an image, two images with one name, a mask that is not a
            single-channel label map, label values beyond the concept list.

    Example:
        >>> data = concept_dataset("colours/")   # then kvis.dissect(model, data)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise KvisError(f"concept dataset folder not found: {folder}")
    if not (folder / "concepts.txt").is_file():
        raise KvisError(f"{folder} is not a concept dataset: it has no concepts.txt (the name "
                        "of concept i on line i), images/ and masks/")
    for needed in ("images", "masks"):
        if not (folder / needed).is_dir():
            raise KvisError(f"{folder} is not a concept dataset: it has no {needed}/ folder")
    concepts = tuple(line.strip() for line in
                     (folder / "concepts.txt").read_text().splitlines() if line.strip())
    if not concepts:
        raise KvisError(f"{folder / 'concepts.txt'} names no concepts")
    images = _files(folder / "images")
    masks = {path.stem: path for path in _files(folder / "masks").values()}
    if not images:
        raise KvisError(f"no images in {folder / 'images'}")
    for stem in images:
        if stem not in masks:
            raise KvisError(f"image {images[stem].name} has no mask {folder}/masks/{stem}.png")
    for stem in masks:
        if stem not in images:
            raise KvisError(f"mask {masks[stem].name} has no image in {folder / 'images'}")
    names = tuple(sorted(images))
    sizes = tuple(read_mask(masks[name], len(concepts)).shape for name in names)
    return ConceptDataset(folder, names, tuple(images[n] for n in names),
                          tuple(masks[n] for n in names), sizes, concepts)


def read_images(data, ids, *, shape, preprocess, notes):
    """Model input float32 (n, H, W, C) for the images `ids` of a `ConceptDataset` (one size),
    each checked against its mask's size and read at `shape` (H, W, C) with `preprocess`; what
    `read_image` converted or resized is counted in `notes`, not warned per file."""
    height, width, channels = shape
    pixels = []
    for i in ids:
        image, name = read_file(data.images[i])
        if image.shape[:2] != data.sizes[i]:
            raise KvisError(f"image {name} is {image.shape[0]}x{image.shape[1]} but its mask "
                            f"{data.masks[i].name} is {data.sizes[i][0]}x{data.sizes[i][1]} "
                            "(height x width)")
        notes["converted"] += min(image.shape[-1], 3) != channels
        notes["resized"] += image.shape[:2] != (height, width)
        pixels.append(read_image(image, size=(height, width), channels=channels, warn=False))
    return preprocess(np.stack(pixels))


def read_mask(path, concepts):
    """A mask file as uint8 (H, W), checked to be a label map with labels 0..concepts."""
    mask, _ = read_file(path)
    if mask.shape[-1] != 1:
        raise KvisError(f"mask {path} is not a single-channel label map (0 = no concept, "
                        "i = concept i)")
    high = int(mask.max())
    if high > concepts:
        raise KvisError(f"mask {path} has label {high}, but concepts.txt names {concepts} "
                        "concepts")
    return mask[..., 0]


def _files(folder):
    found = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in found:
            raise KvisError(f"two files named {path.stem} in {folder}: {found[path.stem].name} "
                            f"and {path.name}")
        found[path.stem] = path
    return found
