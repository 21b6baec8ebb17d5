"""lumen-agent: see, price and attribute every LLM API call a host makes."""

__version__ = "0.1.0"
