"""What the native-runtime clients' calls (Go, Bun) must become: the three
scenarios both clients make, with tokens from the fake provider's wire and
costs computed by hand from the published prices.

USD per 1M tokens: gpt-4o-mini input 0.15, cached input 0.075, output 0.60;
claude-sonnet-4-5 input 3, cache read 0.30, 5-minute cache write 3.75, output 15.
"""

from __future__ import annotations

from decimal import Decimal

COST = {
    # (1300 - 1024) x 0.15 + 1024 x 0.075 + 12 x 0.60 = 41.4 + 76.8 + 7.2 = 125.4 per 1M
    "openai.chat": Decimal("0.00012540"),
    # 78 x 0.15 + 9 x 0.60 = 11.7 + 5.4 = 17.1 per 1M
    "openai.chat.stream": Decimal("0.00001710"),
    # 20 x 3 + 1500 x 0.30 + 300 x 3.75 + 12 x 15 = 60 + 450 + 1125 + 180 = 1815 per 1M
    "anthropic.messages.stream": Decimal("0.00181500"),
}
TOKENS = {
    "openai.chat": {"input_tokens": 1300, "cache_read_tokens": 1024, "output_tokens": 12},
    "openai.chat.stream": {"input_tokens": 78, "cache_read_tokens": 0, "output_tokens": 9},
    "anthropic.messages.stream": {"input_tokens": 1820, "cache_read_tokens": 1500, "cache_write_tokens": 300,
                                  "output_tokens": 12},
}
