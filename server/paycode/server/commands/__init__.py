"""The subcommands of `paycode-server` (paycode.server.cli is the console script)."""
