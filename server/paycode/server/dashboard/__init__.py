"""The merchant dashboard's logic: log-in, the day's figures, chart geometry (the routes are
in paycode.server.http.dashboard)."""
