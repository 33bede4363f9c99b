"""Reinforcement learning with Leap (section 4.3): A2C agents on Atari (ALE) and MinAtar."""
