"""The names kvis spells once: the Python API, the CLI's choices, result labels and figure titles
all read them from here. This module imports nothing heavy, so the CLI can build its options
(and `--help`) without starting TensorFlow."""

# Models kvis loads by name, and the model files it reads.
MODEL_NAMES = ("demo", "vgg16", "resnet50")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
# What follows a class or model name when the weights are random (e.g. vgg16 --weights none).
RANDOM_WEIGHTS = "(random weights)"
# Image files kvis reads from a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Attention methods, in the order the CLI lists them: the CAM family weighs the feature maps of
# one layer; the gradient family attributes to pixels; occlusion measures score drops.
CAM_METHODS = ("grad-cam", "grad-cam++", "score-cam")
GRADIENT_METHODS = ("saliency", "guided-backprop", "smoothgrad", "integrated-gradients")
ATTENTION_METHODS = (*CAM_METHODS, "guided-grad-cam", *GRADIENT_METHODS, "occlusion")
# Which signs of an attribution a figure shows (Captum's `visualize_image_attr` signs).
SIGNS = ("absolute", "positive", "negative", "all")

# What a class explanation explains or an analysis records.
SCORES = ("logit", "probability")

# The transforms of the invariance analysis (Zeiler & Fergus, Fig. 5).
TRANSFORMS = ("translate", "scale", "rotate")

# Views of a layer's filters, rankings of feature maps, ways to compute a deconvnet projection,
# and image parameterizations of activation maximization.
FILTER_VIEWS = ("auto", "grid", "channels", "summary")
RANKINGS = ("mean", "max")
DECONV_METHODS = ("explicit", "gradient")
PARAMETERIZATIONS = ("fft", "pixel")

# The sections of `kvis report`, in page order; the last two need a dataset.
REPORT_SECTIONS = ("prediction", "model", "filters", "features", "maximization", "deconvnet",
                   "attention", "occlusion", "top-examples", "statistics")
