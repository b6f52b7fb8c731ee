"""Training, evaluation and the model card of the animator's embedded video model, ``shapes-svd``."""
