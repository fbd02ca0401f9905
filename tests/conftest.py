"""Fixtures every test module may use: the live-server harness (tests/live_server.py) and the
reliability suite's scale, seed and figures (tests/reliability/figures.py)."""

pytest_plugins = ("tests.live_server", "tests.reliability.figures")
