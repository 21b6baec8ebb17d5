"""The one exception family of ``lumen_agent.parsers``.

Fuzz invariant (as h11 states it): any input either parses or raises a
subclass of ``ParseError``; nothing else escapes a parser.
"""


class ParseError(Exception):
    """Input that is not the protocol we expected."""


class LimitExceeded(ParseError):
    """Input that is valid but larger than a named limit allows."""
