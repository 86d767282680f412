import os

# Tests never talk to Weights & Biases.
os.environ.setdefault("WANDB_MODE", "disabled")
