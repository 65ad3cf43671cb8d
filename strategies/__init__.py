"""Strategies: the small base class any strategy implements, baseline_v1 and examples."""
