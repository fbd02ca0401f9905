"""Points mandates (docs/spec.md §16): binding, deduction, refunds of the points leg."""
