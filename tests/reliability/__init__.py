"""The reliability and security suite: `make reliability` runs it in full and writes
docs/reliability.md; `make test` runs the same tests in their short mode."""
