"""Merchant notifications: what is told (events) and how it is delivered (delivery)."""
