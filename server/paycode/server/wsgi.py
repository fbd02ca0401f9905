"""WSGI entry point: `gunicorn server.wsgi:app` (or `paycode-server serve`).

Configuration comes from the environment (server.config), read once when a worker imports this.
"""

from __future__ import annotations

from paycode.server.app import create_app

app = create_app()
