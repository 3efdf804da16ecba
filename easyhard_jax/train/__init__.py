"""Training: fused train/probe steps, optimizers, checkpoints, ensemble loop."""
