"""Whether this machine can run the real-probe tests, and why not."""

from __future__ import annotations

import os
import shutil


def ebpf_skip_reason(*tools: str) -> str | None:
    """None when root, bcc and the given command-line tools are all here."""
    if os.geteuid() != 0:
        return "eBPF capture needs root"
    try:
        from lumen_agent.capture.kernel_setup import bcc_importable

        ok, detail = bcc_importable()
    except Exception as exc:  # noqa: BLE001
        return f"cannot check bcc: {exc}"
    if not ok:
        return f"bcc missing ({detail}); apt-get install python3-bpfcc"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} missing"
    return None
