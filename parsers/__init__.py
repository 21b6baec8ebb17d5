"""Sans-I/O parsers: bytes in, events out.  Nothing here reads a socket or a clock."""
