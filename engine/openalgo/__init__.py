"""OpenAlgo clients: the REST ``Broker`` (``rest``) and the WebSocket feed (``feed``)."""
