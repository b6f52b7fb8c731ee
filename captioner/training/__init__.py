"""Synthetic-shapes data and the training script for the shipped default captioner."""
