"""The manifest of a microscope site (`kvis-microscope.json`): which model it shows (a
fingerprint: name, layer names, weight shapes, a hash of the weights), over which data and
with which settings, and how far the build got. It is what lets a build refuse another model's
site, refuse to overwrite its own without being told, and resume.
"""

import json
import shutil
from pathlib import Path

from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.io import write_atomically
from kvis.core.models import weights_digest
from kvis.microscope import layout


def fingerprint(model):
    """What identifies a model: its name, layer paths, weight shapes and a hash of its weights."""
    return {"model": model.name, "layers": list(model_graph(model).nodes),
            "shapes": [list(weight.shape) for weight in model.weights],
            "weights": weights_digest(model)}


def prepare(out, model_print, settings, *, resume, overwrite):
    """The manifest to build with, after checking what `out` holds.

    Args:
        out: the site's folder.
        model_print: `fingerprint(model)`.
        settings: what the site is built from: {"layers", "data", "seeds", "steps", ...}.
        resume: continue a site of this model with these settings.
        overwrite: remove the site in `out` first.

    Returns:
        The manifest: {"kvis", "fingerprint", "settings", "finished"}; "finished" lists the
        stages already done (empty for a new site).

    Raises:
        KvisError: `resume` and `overwrite` together; `out` holds another model's site (named)
            or this model's without `resume` or `overwrite`, a site built with other settings,
            or files that are no site.
    """
    from kvis import __version__

    if resume and overwrite:
        raise KvisError("--resume finishes the site in OUT and --overwrite replaces it: pass "
                        "one of them")
    out = Path(out)
    fresh = {"kvis": __version__, "fingerprint": model_print, "settings": settings,
             "finished": []}
    found = read(out)
    if found is None:
        if out.is_dir() and any(out.iterdir()):
            raise KvisError(f"{out} holds files but no kvis microscope; choose a new or empty "
                            "folder")
        return fresh
    name = found["fingerprint"].get("model")
    if overwrite:
        remove_site(out)
        return fresh
    if other := _other_model(out, found, model_print):
        raise KvisError(f"{other}; choose another folder or pass --overwrite to replace it")
    if not resume:
        raise KvisError(f"{out} holds a microscope of model {name!r} ({progress(found)}); pass "
                        "--resume to finish it or --overwrite to replace it")
    differ = [key for key in settings if found["settings"].get(key) != settings[key]]
    if differ:
        key = differ[0]
        raise KvisError(f"{out} holds a microscope of model {name!r} built with other settings "
                        f"({key}: the site's {found['settings'].get(key)!r}, this run's "
                        f"{settings[key]!r}); pass --overwrite to replace it")
    return found


def site_of(out, model):
    """The folder of a microscope site of `model`, checked (what `kvis report --microscope`
    links to).

    Args:
        out: the site's folder (the `out` of `build_microscope`).
        model: the Keras model the site must show.

    Returns:
        `out` as a Path.

    Raises:
        KvisError: `out` holds no microscope, or the microscope of another model or of another
            version of this one.

    Example:
        >>> site_of("site/", model)
    """
    out = Path(out)
    found = read(out)
    if found is None:
        raise KvisError(f"{out} is not a kvis microscope (it has no {layout.MANIFEST}); give the "
                        "folder `kvis microscope` wrote")
    if other := _other_model(out, found, fingerprint(model)):
        raise KvisError(f"{other}; give a microscope of this model")
    return out


def _other_model(out, found, model_print):
    """What differs between the model of the manifest `found` in `out` and the model of
    `model_print`, in words, or None where it is the same model."""
    name = found["fingerprint"].get("model")
    if name != model_print["model"]:
        return f"{out} holds the microscope of model {name!r}, not {model_print['model']!r}"
    if found["fingerprint"] != model_print:
        return (f"{out} holds the microscope of another version of model {name!r} (its layers "
                "or weights differ)")
    return None


def read(out):
    """The manifest in `out`, or None where there is none.

    Raises:
        KvisError: a manifest kvis cannot read.
    """
    path = Path(out) / layout.MANIFEST
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        found = str(error)
    if not (isinstance(found, dict) and isinstance(found.get("fingerprint"), dict)
            and {"settings", "finished"} <= set(found)):
        raise KvisError(f"{path} is not a kvis microscope manifest; choose another folder or "
                        "remove it")
    return found


def write(out, manifest):
    """Write the manifest atomically (sorted keys: the same state gives the same bytes)."""
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    write_atomically(Path(out) / layout.MANIFEST,
                     lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def finish(out, manifest, stage):
    """Record that a stage is done (once) and write the manifest."""
    if stage not in manifest["finished"]:
        manifest["finished"].append(stage)
    write(out, manifest)


def progress(manifest):
    """How far a site's build got, in words: 'complete' or 'pages written'."""
    finished = manifest["finished"]
    if "maximization" in finished:
        return "complete"
    if "pages" in finished:
        return "pages written, activation maximization unfinished"
    return "survey done, pages unfinished" if "survey" in finished else "just started"


def remove_site(out):
    """Remove what a microscope build writes in `out` (its files and folders, nothing else)."""
    out = Path(out)
    for name in (layout.INDEX, layout.SURVEY, layout.MANIFEST):
        (out / name).unlink(missing_ok=True)
    for folder in layout.FOLDERS:
        if (out / folder).is_dir():
            shutil.rmtree(out / folder)
