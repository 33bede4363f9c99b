"""The games of the reinforcement-learning benchmarks (section 4.3, appendix F).

Declared apart from the environments (``leap.experiments.rl.envs``, torch and numpy) so
that the benchmarks' defaults and the command line's options come without them.
"""

from __future__ import annotations

MINATAR_GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
# Mirrors the paper: pretrain on the rest, hold out Breakout and SpaceInvaders.
MINATAR_POOL = ("asterix", "freeway", "seaquest")
MINATAR_HELD_OUT = ("breakout", "space_invaders")
# Evaluated by default: the held-out games and, as Table 6 does with its pretraining games,
# one game of the pool (asterix: learned steadily within 1M steps, docs/reproduction.md).
MINATAR_EVAL = (*MINATAR_HELD_OUT, "asterix")

# The paper's pool is "all environments with an action space of at most 10" except
# Breakout and SpaceInvaders (27 games; the list is not published). These are the games
# of the 2018 Gym Atari suite whose minimal action set has at most 10 actions, less the
# two held-out games: 25 games.
ATARI_POOL = (
    "AirRaid", "Amidar", "Assault", "Asterix", "Atlantis", "BeamRider", "Bowling", "Carnival", "CrazyClimber",
    "DemonAttack", "Enduro", "Freeway", "Gopher", "MsPacman", "NameThisGame", "Phoenix", "Pong", "Pooyan", "Qbert",
    "Skiing", "TimePilot", "Tutankham", "UpNDown", "VideoPinball", "WizardOfWor",
)
# Table 6: pretraining games, held-out games, and held-out games with 14-18 actions.
ATARI_EVAL = ("AirRaid", "UpNDown", "WizardOfWor", "Breakout", "SpaceInvaders", "Asteroids", "Alien", "Gravitar",
              "RoadRunner")
ATARI_HELD_OUT = ("Breakout", "SpaceInvaders")
