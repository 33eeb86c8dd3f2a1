"""Training: ``fit``, its objectives and KL schedules, checkpoints and the optimiser."""
