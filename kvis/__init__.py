"""kvis: see what a convolutional network sees.

The top-level names are what a user calls: loading models and images, each technique, its
result and its figure, the training callbacks and the report. Everything else (the model
graph, probes, backward rules, the scan's state, registries) stays importable from its module
(`kvis.core.graph.probe`, `kvis.core.targets.score_pass`, ...).

Public names load on first use, so `import kvis` (and `kvis --help`) stays quick until
TensorFlow is really needed.
"""

import importlib

_EXPORTS = {
    # Models, images, figures
    "KvisError": "kvis.core.errors",
    "load_model": "kvis.core.models",
    "configure_model": "kvis.core.models",
    "preprocessing_for": "kvis.core.models",
    "class_names": "kvis.core.models",
    "class_label": "kvis.core.models",
    "load_image": "kvis.core.images",
    "ModelImage": "kvis.core.images",
    "demo_images": "kvis.core.demo",
    "save_figure": "kvis.core.io",
    # Layers: the table, receptive fields, filters, feature maps
    "layer_table": "kvis.layers.inventory",
    "LayerInfo": "kvis.layers.inventory",
    "receptive_fields": "kvis.layers.receptive_fields",
    "ReceptiveField": "kvis.layers.receptive_fields",
    "last_conv_layer": "kvis.core.anatomy",
    "conv_filters": "kvis.layers.filters",
    "Filters": "kvis.layers.filters",
    "plot_filters": "kvis.layers.filters",
    "feature_maps": "kvis.layers.feature_maps",
    "FeatureMaps": "kvis.layers.feature_maps",
    "rank_channels": "kvis.layers.feature_maps",
    "plot_feature_maps": "kvis.layers.feature_maps",
    "plot_layer_summary": "kvis.layers.feature_maps",
    "plot_feature_overview": "kvis.layers.feature_maps",
    # Synthesis: activation maximization and inversion
    "objectives": None,
    "maximize": "kvis.synthesis.maximize",
    "maximize_filters": "kvis.synthesis.maximize",
    "maximize_classes": "kvis.synthesis.maximize",
    "Synthesis": "kvis.synthesis.maximize",
    "plot_synthesis": "kvis.synthesis.maximize",
    "invert": "kvis.synthesis.invert",
    "Inversion": "kvis.synthesis.invert",
    "plot_inversion": "kvis.synthesis.invert",
    # Deconvnet projections
    "deconvnet": "kvis.deconv.deconvnet",
    "Projection": "kvis.deconv.deconvnet",
    "plot_projections": "kvis.deconv.deconvnet",
    # Attribution: attention maps, sanity checks, occlusion
    "attention": "kvis.attribution.attention",
    "Explanation": "kvis.attribution.explanation",
    "plot_attention": "kvis.attribution.attention",
    "saliency": "kvis.attribution.gradients",
    "guided_backprop": "kvis.attribution.gradients",
    "smoothgrad": "kvis.attribution.gradients",
    "integrated_gradients": "kvis.attribution.gradients",
    "grad_cam": "kvis.attribution.cam",
    "grad_cam_plus_plus": "kvis.attribution.cam",
    "score_cam": "kvis.attribution.cam",
    "guided_grad_cam": "kvis.attribution.cam",
    "cascading_randomization": "kvis.attribution.sanity",
    "SanityCheck": "kvis.attribution.sanity",
    "plot_sanity_check": "kvis.attribution.sanity",
    "occlusion": "kvis.attribution.occlusion",
    "occlusion_map": "kvis.attribution.occlusion",
    "Occlusion": "kvis.attribution.occlusion",
    "plot_occlusion": "kvis.attribution.occlusion",
    # Zeiler & Fergus analyses
    "invariance": "kvis.analyses.invariance",
    "InvarianceCurves": "kvis.analyses.invariance",
    "plot_invariance": "kvis.analyses.invariance",
    "correspondence": "kvis.analyses.correspondence",
    "Correspondence": "kvis.analyses.correspondence",
    "plot_correspondence": "kvis.analyses.correspondence",
    # Datasets: sources, the scan, top examples, statistics, dissection
    "image_source": "kvis.dataset.sources",
    "ImageSource": "kvis.dataset.sources",
    "scan": "kvis.dataset.scan",
    "Scan": "kvis.dataset.scan",
    "scan_on_beam": "kvis.dataset.beam",
    "read_index": "kvis.dataset.examples",
    "write_index": "kvis.dataset.examples",
    "top_examples": "kvis.dataset.examples",
    "TopExamples": "kvis.dataset.examples",
    "plot_top_examples": "kvis.dataset.examples",
    "filter_spectrum": "kvis.dataset.statistics",
    "FilterSpectrum": "kvis.dataset.statistics",
    "plot_statistics": "kvis.dataset.statistics",
    "dissect": "kvis.dataset.dissection",
    "Dissection": "kvis.dataset.dissection",
    "plot_dissection": "kvis.dataset.dissection",
    # Training: callbacks and the filter-norm constraint
    "FeatureEvolution": "kvis.training.evolution",
    "Evolution": "kvis.training.evolution",
    "load_evolution": "kvis.training.evolution",
    "plot_evolution": "kvis.training.evolution",
    "TensorBoardImages": "kvis.training.tensorboard",
    "FilterNormConstraint": "kvis.training.constraints",
    # The report
    "build_report": "kvis.report.sections",
    "Report": "kvis.report.sections",
    "write_report": "kvis.report.page",
    # The microscope: a website of every unit
    "build_microscope": "kvis.microscope.build",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kvis' has no attribute {name!r}")
    if _EXPORTS[name] is None:
        return importlib.import_module("kvis.synthesis.objectives")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return __all__
