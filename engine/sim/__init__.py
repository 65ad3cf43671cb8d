"""The simulated broker and the OpenAlgo-compatible simulator server.

- ``matching``: ``SimulatedBroker``, an in-process, deterministic matching engine implementing
  ``engine.broker.Broker`` with OpenAlgo analyzer semantics;
- ``server``: ``SimulatorServer`` (that broker plus a tick source behind OpenAlgo's protocol),
  and ``serve_forever`` for ``run.py simulator``; ``settings``: ``SimulatorSettings``;
- ``rest`` / ``feed``: the REST (HTTP) and WebSocket sides; ``wire``: request schemas, reply
  bodies and feed frames; ``faults``: fault injection; ``ratelimit``: moving-window limits.
"""
