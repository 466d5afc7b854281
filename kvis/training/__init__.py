"""Training-time views: the FeatureEvolution and TensorBoardImages callbacks and the filter-norm
constraint."""
