"""Looking at layers: the layer table, receptive fields, filters and feature maps."""
