"""A throwaway certificate authority and server certificate for local TLS tests.

Made with the ``openssl`` command line tool (Debian package ``openssl``), which is
on every developer machine and in CI; the ``cryptography`` package is not a
dependency of the project.

    certs = ensure_certs(tmp_dir)
    subprocess.run([...], env={**os.environ, **certs.env})

The server certificate names ``localhost``, ``127.0.0.1``, ``::1`` and the real
provider host names, so a client can also be pointed at
``https://api.openai.com:PORT`` with its name resolved to 127.0.0.1
(``curl --resolve``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Names the server certificate is valid for.
DNS_NAMES: tuple[str, ...] = (
    "localhost",
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "api.mistral.ai",
    "api.deepseek.com",
    "openrouter.ai",
    "api.groq.com",
    "api.together.xyz",
    "bedrock-runtime.us-east-1.amazonaws.com",
    "example-resource.openai.azure.com",
)
IP_ADDRESSES: tuple[str, ...] = ("127.0.0.1", "::1")

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"

# Long enough that a kept machine never meets an expired certificate.
CA_DAYS = 3650
CERT_DAYS = 825


class CertError(RuntimeError):
    """openssl failed to make the certificates."""


@dataclass(frozen=True, slots=True)
class Certs:
    directory: Path
    ca: Path  # CA certificate (PEM): what clients trust
    cert: Path  # server certificate (PEM)
    key: Path  # server private key (PEM, unencrypted)

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that make each client trust ``ca``.

        SSL_CERT_FILE: Python's ``ssl`` default paths and httpx2/httpx (the
        openai and anthropic SDKs) and OpenSSL-based tools; REQUESTS_CA_BUNDLE:
        requests; CURL_CA_BUNDLE: curl; NODE_EXTRA_CA_CERTS: Node.js (fetch/https).
        Also keeps local traffic away from any configured proxy.
        """
        ca = str(self.ca)
        return {
            "SSL_CERT_FILE": ca,
            "REQUESTS_CA_BUNDLE": ca,
            "CURL_CA_BUNDLE": ca,
            "NODE_EXTRA_CA_CERTS": ca,
            "NO_PROXY": "localhost,127.0.0.1,::1",
            "no_proxy": "localhost,127.0.0.1,::1",
        }


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise CertError("the openssl command is not installed (apt-get install openssl)")
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CertError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _make(directory: Path) -> None:
    key_args = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *key_args,
        "-keyout", CA_KEY_FILE, "-out", CA_FILE,
        "-days", str(CA_DAYS), "-subj", "/O=lumen-agent tests/CN=lumen-agent test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )
    _openssl(
        "req", "-new", *key_args,
        "-keyout", KEY_FILE, "-out", "server.csr",
        "-subj", "/O=lumen-agent tests/CN=localhost",
        cwd=directory,
    )
    san = ",".join([*(f"DNS:{n}" for n in DNS_NAMES), *(f"IP:{ip}" for ip in IP_ADDRESSES)])
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid:always\n"
        f"subjectAltName={san}\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr",
        "-CA", CA_FILE, "-CAkey", CA_KEY_FILE, "-CAcreateserial",
        "-days", str(CERT_DAYS), "-sha256", "-extfile", "server.ext",
        "-out", CERT_FILE,
        cwd=directory,
    )


def ensure_certs(directory: str | os.PathLike[str]) -> Certs:
    """Return the CA and server certificate in ``directory``, making them once.

    Idempotent and safe against concurrent callers: the files are made in a
    scratch folder and moved into place; a second caller reuses them.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    certs = Certs(directory, directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE)
    if all(p.is_file() for p in (certs.ca, certs.cert, certs.key)):
        return certs
    scratch = Path(tempfile.mkdtemp(prefix=".certs-", dir=directory))
    try:
        _make(scratch)
        # The key and CA go first; server.pem last, so its presence means complete.
        for name in (CA_KEY_FILE, KEY_FILE, CA_FILE, CERT_FILE):
            os.replace(scratch / name, directory / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return certs


if __name__ == "__main__":  # python -m tests.support.certs DIR
    import sys

    made = ensure_certs(sys.argv[1] if len(sys.argv) > 1 else ".")
    for k, v in made.env.items():
        print(f"{k}={v}")
