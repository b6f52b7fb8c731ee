"""Synthetic-shapes data and the training of the shipped default captioner (``python -m captioner.training.train``).

``shapes`` draws the scenes; ``settings``, ``model``, ``batches``, ``loop``, ``evaluation`` and ``card`` are the
training run's parts; ``train`` is its command line.
"""
