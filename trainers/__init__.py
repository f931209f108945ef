"""tiankong.trainers: pretraining, SFT, reward model, PPO and DPO on the engine's models."""
