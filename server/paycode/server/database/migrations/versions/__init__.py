"""Migration scripts, applied in revision order by server.migrate.upgrade."""
