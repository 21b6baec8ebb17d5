"""The pure core: events in, priced Call rows out (no I/O of its own)."""
