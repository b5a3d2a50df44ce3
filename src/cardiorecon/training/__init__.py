"""Training: slice data, the Lightning module, checkpoints without pickles."""
