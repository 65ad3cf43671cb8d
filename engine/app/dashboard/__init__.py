"""The live dashboard: a read-only web page of a running engine (or of a finished run's database).

``view`` builds what the page shows; ``server`` serves it (Starlette + uvicorn, on 127.0.0.1 with
a token); ``static/`` holds the page and its script. docs/operations/dashboard.md is the user's
page.
"""
