"""Utilities every layer may use: errors, files and checkpoints, seeding, torchrun,
progress and devices. Imports only torch, the standard library and third-party packages."""
