"""The books: the double-entry ledger, refunds, settlement files and reconciliation."""
