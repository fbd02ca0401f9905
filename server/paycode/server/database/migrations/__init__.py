"""Alembic migrations of the server database; run them with `paycode-server init-db`."""
