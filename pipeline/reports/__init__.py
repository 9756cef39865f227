"""Tables and figures written from training and evaluation results."""
