"""WSGI entry point: `gunicorn paycode.server.wsgi:app` (or `paycode-server serve`).

Configuration comes from the environment (paycode.server.config), read once when a worker
imports this.
"""

from __future__ import annotations

from paycode.server.app import create_app
from paycode.server.config import ServerConfig

app = create_app(ServerConfig.from_env())
