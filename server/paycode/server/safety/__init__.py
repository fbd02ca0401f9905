"""Safety: the guessing guard, password-free limits, password hashes, secrets at rest, the
verifier keyring and master-key rotation."""
