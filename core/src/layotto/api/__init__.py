"""Edges: translate wire messages to service calls and LayottoErrors to statuses, once."""
