"""The actor runtime: the actor base, the name registry, supervisors, the engine clock, the replay
step barrier, logging with redaction, memory housekeeping and latency probes.
"""
