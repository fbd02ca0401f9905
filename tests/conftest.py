"""Fixtures every test module may use: the live-server harness (tests/live_server.py), the
reliability suite's scale, seed and figures (tests/reliability/figures.py), and the two-instance
cluster of the race tests (tests/race_fixture.py)."""

pytest_plugins = ("tests.live_server", "tests.race_fixture", "tests.reliability.figures")
