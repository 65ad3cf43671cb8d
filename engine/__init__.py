"""The engine runtime: messages, clock, config, supervision, persistence, broker boundary,
OpenAlgo clients, the simulated broker and simulator, recording, replay and synthetic days."""
