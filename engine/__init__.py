"""tiankong.engine: load local Hugging Face checkpoints and generate, one token event at a time."""
