"""The HTTP side of the server: one blueprint per URL area, and what every route shares
(problem details, strict request fields, signed requests, idempotency keys)."""
