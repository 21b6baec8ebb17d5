"""A real SDK client that downloads batch results from the fake provider.

    python tests/support/batch_client.py --url https://localhost:PORT [--wait S] [--twice]

With the ``openai`` package: ``client.files.content(OPENAI_FILE_ID)`` (batch
output) and ``client.files.content(TRAINING_FILE_ID)`` (fine-tuning data, not
batch output); with the ``anthropic`` package:
``client.messages.batches.results(ANTHROPIC_BATCH_ID)``.  ``--twice``
downloads everything a second time.  Prints one JSON line per download with
the lines the SDK read.  The credentials are obvious fakes; trust comes from
SSL_CERT_FILE.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import anthropic
import openai
from fake_batches import ANTHROPIC_BATCH_ID, OPENAI_FILE_ID, TRAINING_FILE_ID

OPENAI_KEY = "sk-test-fake-0000"
ANTHROPIC_KEY = "sk-ant-test-fake-0000"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--wait", type=float, default=0.0, help="seconds before the first download (probes attach)")
    ap.add_argument("--twice", action="store_true")
    args = ap.parse_args()
    time.sleep(args.wait)
    oai = openai.OpenAI(api_key=OPENAI_KEY, base_url=args.url + "/v1", max_retries=0)
    ant = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=args.url, max_retries=0)
    for _ in range(2 if args.twice else 1):
        for file_id in (OPENAI_FILE_ID, TRAINING_FILE_ID):
            content = oai.files.content(file_id)
            lines = [json.loads(line) for line in content.text.splitlines() if line.strip()]
            print(json.dumps({"download": f"openai:{file_id}", "lines": len(lines)}), flush=True)
        results = list(ant.messages.batches.results(ANTHROPIC_BATCH_ID))
        print(json.dumps({"download": f"anthropic:{ANTHROPIC_BATCH_ID}", "lines": len(results),
                          "types": [r.result.type for r in results]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
