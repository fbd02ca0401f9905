"""The database: engine and sessions, the tables, migrations, per-process caches of rows."""
