"""One module per actor: feed, bar builders, swing detector, strategy host, order manager,
position monitor, risk manager, reconciler, store writer and health."""
