"""Training: GPU-resident crops, the loop, checkpoints and resume."""
