"""kvis: see what a convolutional network sees.

Public names load on first use, so `import kvis` (and `kvis --help`) stays quick until
TensorFlow is really needed.
"""

import importlib

_EXPORTS = {
    "KvisError": "kvis.errors",
    "load_model": "kvis.models",
    "class_names": "kvis.models",
    "imagenet_class_names": "kvis.models",
    "load_image": "kvis.images",
    "read_image": "kvis.images",
    "preprocessing_for": "kvis.models",
    "Preprocessing": "kvis.preprocessing",
    "ModelImage": "kvis.images",
    "Images": "kvis.images",
    "as_images": "kvis.images",
    "configure_model": "kvis.models",
    "ModelInfo": "kvis.models",
    "model_info": "kvis.models",
    "class_label": "kvis.models",
    "read_labels": "kvis.models",
    "folder_class_names": "kvis.models",
    "SCORES": "kvis.vocabulary",
    "ATTENTION_METHODS": "kvis.vocabulary",
    "PREPROCESSING": "kvis.preprocessing",
    "model_graph": "kvis.graph",
    "layer_paths": "kvis.graph",
    "probe": "kvis.graph",
    "ReceptiveField": "kvis.receptive",
    "receptive_fields": "kvis.receptive",
    "LayerInfo": "kvis.inventory",
    "layer_table": "kvis.inventory",
    "format_layer_table": "kvis.inventory",
    "Filters": "kvis.filters",
    "conv_filters": "kvis.filters",
    "conv_layers": "kvis.anatomy",
    "plot_filters": "kvis.filters",
    "FeatureMaps": "kvis.features",
    "feature_maps": "kvis.features",
    "spatial_layers": "kvis.anatomy",
    "stage_layers": "kvis.anatomy",
    "rank_channels": "kvis.features",
    "plot_feature_maps": "kvis.features",
    "plot_layer_summary": "kvis.features",
    "plot_feature_overview": "kvis.features",
    "objectives": "kvis",
    "Settings": "kvis.engine",
    "Render": "kvis.engine",
    "default_settings": "kvis.engine",
    "render": "kvis.engine",
    "Synthesis": "kvis.maximization",
    "maximize": "kvis.maximization",
    "maximize_filters": "kvis.maximization",
    "maximize_classes": "kvis.maximization",
    "plot_synthesis": "kvis.maximization",
    "Inversion": "kvis.inversion",
    "invert": "kvis.inversion",
    "inversion_settings": "kvis.inversion",
    "plot_inversion": "kvis.inversion",
    "RULES": "kvis.backprop",
    "class_gradients": "kvis.backprop",
    "layer_gradients": "kvis.backprop",
    "Projection": "kvis.projection",
    "deconvnet": "kvis.projection",
    "projection_images": "kvis.projection",
    "plot_projections": "kvis.projection",
    "Explanation": "kvis.attribution",
    "saliency": "kvis.attribution",
    "guided_backprop": "kvis.attribution",
    "smoothgrad": "kvis.attribution",
    "integrated_gradients": "kvis.attribution",
    "grad_cam": "kvis.cam",
    "grad_cam_plus_plus": "kvis.cam",
    "score_cam": "kvis.cam",
    "guided_grad_cam": "kvis.cam",
    "last_conv_layer": "kvis.anatomy",
    "attention": "kvis.attention_maps",
    "overlay": "kvis.attention_maps",
    "plot_attention": "kvis.attention_maps",
    "SanityCheck": "kvis.sanity",
    "cascading_randomization": "kvis.sanity",
    "plot_sanity_check": "kvis.sanity",
    "class_index": "kvis.models",
    "class_indices": "kvis.models",
    "resolve_classes": "kvis.models",
    "Occlusion": "kvis.analyses.occlusion",
    "occlusion": "kvis.analyses.occlusion",
    "plot_occlusion": "kvis.analyses.occlusion",
    "InvarianceCurves": "kvis.analyses.invariance",
    "invariance": "kvis.analyses.invariance",
    "plot_invariance": "kvis.analyses.invariance",
    "Correspondence": "kvis.analyses.correspondence",
    "correspondence": "kvis.analyses.correspondence",
    "correspondence_table": "kvis.analyses.correspondence",
    "plot_correspondence": "kvis.analyses.correspondence",
    "mean_pixel": "kvis.models",
    "penultimate_layer": "kvis.anatomy",
    "demo_images": "kvis.demo",
    "save_figure": "kvis.io",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kvis' has no attribute {name!r}")
    if _EXPORTS[name] == "kvis":
        return importlib.import_module(f"kvis.{name}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return __all__
