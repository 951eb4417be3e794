"""Datasets, losses and training loops: few-shot adapters and image-depth pre-training."""
