"""Inference beyond one run: masks from saved probabilities."""
