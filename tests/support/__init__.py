"""Test support: a local TLS fake of the LLM providers and the real clients that call it.

- ``certs``: a throwaway CA and server certificate, plus the environment that
  makes curl, Python (httpx) and Node.js trust it.
- ``fake_provider``: a TLS HTTP/1.1 server speaking the providers' wire formats,
  with deterministic token counts (``EXPECTED`` / ``expected()``).
- ``clients``: run real clients (curl, the openai/anthropic SDKs, Node fetch) as
  subprocesses against it.
"""
