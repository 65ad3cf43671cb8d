"""The engine, by layer (top to bottom): ``app``, ``report``, then the top-level ``actors`` and
``strategies``, then ``trading``, ``sim`` | ``openalgo``, ``store``, ``market``, ``runtime``; at the
base ``config`` (the loader), ``broker`` (the broker interface), ``messages`` and ``settings``.
A module imports only from its own layer or those below (setup.cfg, ``[importlinter]``)."""
