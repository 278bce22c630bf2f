"""Transition Models (TiM): learn the jump x_t -> x_r between any two noise levels.

Time convention (stated once for the whole library): ``t = 0`` is data and larger ``t`` is
noisier; for the default linear path ``t = 1`` is pure noise. A transition goes from the
current time ``t`` to an earlier time ``r <= t``.
"""

__version__ = "0.1.0"
