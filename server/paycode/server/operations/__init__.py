"""Running the server: operator services, the worker's purge, metrics, logs and the
code-version lifecycle."""
