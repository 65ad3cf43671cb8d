"""Trading logic, pure and actor-free: the order state machine and bookkeeping, the risk rules and
the trade table.
"""
