"""Dataset-scale unit analysis: image sources, the streaming scan and its top-k state, top-9
examples and the index, statistics, network dissection and the Beam pipeline."""
