"""Market logic, pure and actor-free: instruments and the session calendar, 1-minute bars, swings,
the day's universe, session files of recorded ticks and the synthetic trading day.
"""
