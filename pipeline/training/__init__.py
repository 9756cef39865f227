"""Training beyond one run: cross-validation over the dataset's folds."""
