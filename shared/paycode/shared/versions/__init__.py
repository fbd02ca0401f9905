"""Payment-code versions: one module each, routed by `registry`."""
