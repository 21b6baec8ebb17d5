"""A real Bedrock client (boto3 ``bedrock-runtime``) calling the fake provider.

    python tests/support/bedrock_client.py --url https://localhost:PORT bedrock.converse bedrock.converse-stream ...

Credentials are fake (the environment's AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY);
the CA comes from SSL_CERT_FILE.  One JSON line per call: scenario, request_id
(x-amzn-requestid), the usage the SDK saw.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import boto3
from botocore.config import Config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_provider as fp  # noqa: E402

PROMPT = "What is the capital of the UK?"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("scenarios", nargs="+")
    args = ap.parse_args()
    client = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=args.url,
                          verify=os.environ.get("SSL_CERT_FILE"),
                          config=Config(retries={"max_attempts": 1}, connect_timeout=10, read_timeout=60))
    converse_messages = [{"role": "user", "content": [{"text": PROMPT}]}]
    invoke_body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 256,
                              "messages": [{"role": "user", "content": PROMPT}]})
    for scenario in args.scenarios:
        model = fp.SCENARIOS[scenario].request_model
        endpoint = fp.SCENARIOS[scenario].endpoint
        if endpoint == "converse":
            r = client.converse(modelId=model, messages=converse_messages)
            usage = r["usage"]
        elif endpoint == "converse-stream":
            r = client.converse_stream(modelId=model, messages=converse_messages)
            usage = next(e["metadata"]["usage"] for e in r["stream"] if "metadata" in e)
        elif endpoint == "invoke":
            r = client.invoke_model(modelId=model, body=invoke_body)
            usage = json.loads(r["body"].read())["usage"]
        else:
            r = client.invoke_model_with_response_stream(modelId=model, body=invoke_body)
            events = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
            usage = events[-1]["amazon-bedrock-invocationMetrics"]
        meta = r["ResponseMetadata"]
        print(json.dumps({"scenario": scenario, "ok": meta["HTTPStatusCode"] == 200,
                          "request_id": meta["RequestId"], "usage": usage}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
