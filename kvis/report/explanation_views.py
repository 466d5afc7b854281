"""The report's sections that explain the class: attention maps and occlusion."""

from kvis.attribution.attention import attention as explain
from kvis.attribution.attention import plot_attention
from kvis.attribution.occlusion import occlusion as occlude
from kvis.attribution.occlusion import plot_occlusion
from kvis.core.anatomy import require_classifier
from kvis.core.errors import KvisError
from kvis.core.vocabulary import ATTENTION_METHODS
from kvis.plot.figures import png_bytes
from kvis.report.page import FIGURE_DPI
from kvis.report.parts import Part

_METHOD_NOTES = {
    "grad-cam": "gradient-weighted feature maps (Selvaraju et al. 2017)",
    "grad-cam++": "second-order weights of the feature maps (Chattopadhay et al. 2018)",
    "score-cam": "feature maps weighted by the score of the image they mask (Wang et al. "
                 "2020)",
    "guided-grad-cam": "Grad-CAM times guided backpropagation",
    "saliency": "|gradient| of the class score (Simonyan et al. 2014)",
    "guided-backprop": "gradient through ReLUs rectified both ways (Springenberg et al. 2015)",
    "smoothgrad": "saliency averaged over noisy copies (Smilkov et al. 2017)",
    "integrated-gradients": "gradients integrated from a black image (Sundararajan et al. "
                            "2017)",
}


def attention(job):
    require_classifier(job.model, "an attention map")
    # Occlusion has a section of its own, with the paper's grids.
    methods = ("grad-cam", "saliency") if job.fast else tuple(
        method for method in ATTENTION_METHODS if method != "occlusion")
    parts, notes = [], []
    for method in methods:
        try:
            result = explain(job.model, job.image, method, classes=job.classes,
                             progress=job.progress)
        except KvisError as reason:
            notes.append(f"{method}: {reason}")
            continue
        where = f" at {result.layer}" if result.layer else ""
        parts.append(Part(
            f"{method}{where}: {_METHOD_NOTES[method]}; evidence for {result.class_labels[0]} "
            f"(logit {result.scores[0]:.3g}).",
            png=png_bytes(plot_attention(result), dpi=FIGURE_DPI)))
    if not parts:
        raise KvisError("; ".join(notes))
    return parts, notes


def occlusion(job):
    require_classifier(job.model, "occlusion sensitivity")
    side = min(job.image.x.shape[1:3])
    size = max(1, round(side / (4 if job.fast else 6)))
    stride = max(1, size // (2 if job.fast else 3))
    result = occlude(job.model, job.image, size=size, stride=stride, classes=job.classes,
                     progress=job.progress)
    return [Part(
        f"A {size} px square of the mean pixel slid in steps of {stride} px: the total of "
        f"{result.layer} map #{result.channel}, the probability of {result.class_label} and "
        "the most likely class at each position (Zeiler & Fergus 2014, Fig. 7), and the "
        "per-pixel mean probability drop (Captum's sensitivity).",
        png=png_bytes(plot_occlusion(result), dpi=FIGURE_DPI))], []
