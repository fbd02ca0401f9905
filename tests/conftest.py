"""Fixtures every test module may use: the live-server harness (tests/live_server.py)."""

pytest_plugins = ("tests.live_server",)
