"""The orders domain: event validation, the handler that applies events, and the generator of
sample (and deliberately invalid) events."""
