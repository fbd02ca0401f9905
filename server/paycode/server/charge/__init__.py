"""A charge: planned in Python, carried out as one database transaction (PostgreSQL function
or the SQLite reference steps); the step-up confirmation and merchant-QR payments built on it."""
