"""The analyses of Zeiler & Fergus ("Visualizing and Understanding Convolutional Networks",
ECCV 2014, section 4) beyond occlusion (which explains a class, so lives in `kvis.attribution`):
feature invariance and correspondence."""
