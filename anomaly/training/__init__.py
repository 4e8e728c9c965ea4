"""Training: data sets, the ensemble, evaluation and the model registry."""
