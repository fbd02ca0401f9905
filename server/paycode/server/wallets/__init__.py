"""The server's side of the wallet: log-in sessions, enrollment and devices, balance, history."""
