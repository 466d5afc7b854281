"""The analyses of Zeiler & Fergus ("Visualizing and Understanding Convolutional Networks",
ECCV 2014, section 4): occlusion sensitivity, feature invariance and correspondence."""
