"""Fixtures every test module may use: the servers (tests/support/servers.py), the two-instance
cluster of the race tests (tests/support/races.py), and the reliability suite's scale, seed and
figures (tests/reliability/figures.py). tests/support/__init__.py says where everything is."""

pytest_plugins = (
    "tests.support.servers",
    "tests.support.browser",
    "tests.support.races",
    "tests.reliability.figures",
)
