"""Make the running kernel usable by BCC, and say what is missing.

BCC compiles BPF C at start-up and needs three things from the host that a
minimal machine may not have:

* kernel headers at ``/lib/modules/$(uname -r)/build`` (and ``source``).  When
  the exact headers are absent, headers of another installed kernel work for
  our programs (they only use stable UAPI types and BPF helpers), so we link
  the newest installed ``linux-headers-*`` tree there.  ``BCC_KERNEL_SOURCE``
  alone is not enough for BCC's clang front-end, hence the symlinks.
* tracefs mounted: attaching a uprobe through the perf PMU works without it,
  but BCC's detach writes to ``uprobe_events`` and fails.
* root, or CAP_BPF + CAP_PERFMON.

This module never imports bcc; ``check_prerequisites`` only tries to.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lumen_agent.errors import LumenError

MODULES_DIR = Path("/lib/modules")
HEADERS_ROOT = Path("/usr/src")
TRACEFS = Path("/sys/kernel/tracing")
BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")
UPROBE_PMU = Path("/sys/bus/event_source/devices/uprobe/type")
BCC_DIST_PACKAGES = "/usr/lib/python3/dist-packages"

# Capability numbers from linux/capability.h.
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


class CaptureError(LumenError):
    """A capture prerequisite is missing.  ``str()`` is one line with the fix."""


@dataclass(frozen=True, slots=True)
class Check:
    """One prerequisite, as ``lumen-agent doctor`` prints it (and ``run --capture auto`` reports it)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def kernel_release() -> str:
    return platform.release()


def _version_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.-]", name))


def find_headers_tree() -> tuple[Path, Path | None] | None:
    """Newest installed arch-specific headers tree and its ``common`` twin.

    Debian splits headers into ``linux-headers-X-amd64`` (generated files,
    the ``build`` dir) and ``linux-headers-X-common`` (the ``source`` dir).
    Other distributions ship one tree; then ``source`` is the same tree.
    """
    if not HEADERS_ROOT.is_dir():
        return None
    trees = [
        p
        for p in HEADERS_ROOT.iterdir()
        if p.name.startswith("linux-headers-")
        and not p.name.endswith("-common")
        and (p / "include").is_dir()
        and (p / "Makefile").exists()
    ]
    if not trees:
        return None
    build = max(trees, key=lambda p: _version_key(p.name))
    # linux-headers-6.1.0-56-amd64 -> linux-headers-6.1.0-56-common
    m = re.match(r"(linux-headers-.+?)-[^-]+$", build.name)
    source = None
    if m:
        common = HEADERS_ROOT / f"{m.group(1)}-common"
        if common.is_dir():
            source = common
    return build, source


def headers_dir(release: str | None = None) -> Path:
    return MODULES_DIR / (release or kernel_release())


def headers_present(release: str | None = None) -> bool:
    build = headers_dir(release) / "build"
    return (build / "include").is_dir() or (build / "Makefile").exists()


def ensure_kernel_headers(release: str | None = None) -> Path:
    """Create ``/lib/modules/$(uname -r)/{build,source}`` when missing."""
    mod = headers_dir(release)
    if headers_present(release):
        return mod / "build"
    found = find_headers_tree()
    if found is None:
        raise CaptureError(
            f"no kernel headers for {mod.name} and none installed in {HEADERS_ROOT}",
            "apt-get install linux-headers-amd64 (or your distribution's kernel headers package)",
        )
    build, source = found
    try:
        mod.mkdir(parents=True, exist_ok=True)
        for name, target in (("build", build), ("source", source or build)):
            link = mod / name
            if link.is_symlink() and not link.exists():
                link.unlink()  # dangling link from an old headers package
            if not link.exists():
                link.symlink_to(target)
    except OSError as exc:
        raise CaptureError(
            f"cannot link kernel headers into {mod}: {exc.strerror}",
            f"run as root, or: ln -s {build} {mod}/build",
        ) from exc
    return mod / "build"


def tracefs_mounted() -> bool:
    return (TRACEFS / "uprobe_events").exists()


def ensure_tracefs() -> None:
    if tracefs_mounted():
        return
    try:
        subprocess.run(
            ["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CaptureError(
            f"tracefs is not mounted at {TRACEFS} and mounting it failed ({exc})",
            f"mount -t tracefs nodev {TRACEFS}",
        ) from exc
    if not tracefs_mounted():
        raise CaptureError(
            f"tracefs mounted but {TRACEFS}/uprobe_events is missing",
            "use a kernel built with CONFIG_UPROBE_EVENTS=y",
        )


def _effective_caps() -> int:
    # /proc/self/status by hand: psutil does not expose capabilities.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def uprobes_need_sys_admin(release: str | None = None) -> bool:
    """Linux 6.16 went back to requiring CAP_SYS_ADMIN to create uprobes
    ("perf: Revert to requiring CAP_SYS_ADMIN for uprobes"): CAP_PERFMON alone
    gets EACCES there."""
    match = re.match(r"(\d+)\.(\d+)", release or kernel_release())
    return match is not None and (int(match.group(1)), int(match.group(2))) >= (6, 16)


def needed_capabilities() -> str:
    base = "CAP_BPF,CAP_PERFMON,CAP_SYS_PTRACE,CAP_DAC_READ_SEARCH"
    return base + ",CAP_SYS_ADMIN" if uprobes_need_sys_admin() else base


def has_bpf_permissions() -> bool:
    # Root without capabilities (a container, `setpriv --bounding-set=-all`)
    # cannot load BPF either: the effective set decides, not the uid.
    caps = _effective_caps()
    if caps & (1 << CAP_SYS_ADMIN):
        return True
    if uprobes_need_sys_admin():
        return False
    return bool(caps & (1 << CAP_BPF)) and bool(caps & (1 << CAP_PERFMON))


def bcc_importable() -> tuple[bool, str]:
    """Whether bcc can be imported, without importing it or touching sys.path.

    ``bpf_loader.import_bcc`` is the one place that imports bcc, in the loader
    child (appending Debian's dist-packages at the end of sys.path when needed).
    """
    import importlib.util

    spec = importlib.util.find_spec("bcc")
    if spec is not None and spec.origin:
        return True, spec.origin
    debian = Path(BCC_DIST_PACKAGES) / "bcc" / "__init__.py"
    if debian.exists():
        return True, str(debian)
    return False, "bcc python module not found"


def check_prerequisites() -> list[Check]:
    """Report every prerequisite without changing anything."""
    rel = kernel_release()
    checks = [Check("kernel", True, rel)]
    checks.append(
        Check(
            "btf",
            BTF_VMLINUX.exists(),
            str(BTF_VMLINUX) if BTF_VMLINUX.exists() else "absent",
            "" if BTF_VMLINUX.exists() else "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    )
    up = UPROBE_PMU.exists()
    checks.append(
        Check(
            "uprobes",
            up,
            "uprobe PMU present" if up else "no uprobe PMU",
            "" if up else "use a kernel built with CONFIG_UPROBES=y and CONFIG_UPROBE_EVENTS=y",
        )
    )
    ok, detail = bcc_importable()
    checks.append(Check("bcc", ok, detail, "" if ok else "apt-get install python3-bpfcc"))
    if headers_present(rel):
        checks.append(Check("headers", True, str((headers_dir(rel) / "build").resolve())))
    else:
        found = find_headers_tree()
        if found:
            checks.append(
                Check("headers", True, f"{found[0]} (will be linked to {headers_dir(rel)}/build)")
            )
        else:
            checks.append(
                Check("headers", False, f"none for {rel}", "apt-get install linux-headers-amd64")
            )
    checks.append(_tracefs_check())
    perm = has_bpf_permissions()
    checks.append(
        Check(
            "permissions",
            perm,
            ("root" if os.geteuid() == 0 else "capabilities") if perm
            else f"the effective capability set lacks {needed_capabilities()}",
            "" if perm else f"run as root (sudo) with full capabilities, or grant {needed_capabilities()}",
        )
    )
    return checks


def _tracefs_check() -> Check:
    """tracefs unmounted is no failure when ``prepare`` can mount it (a fresh
    host boots that way): only what the agent cannot fix stops it."""
    if tracefs_mounted():
        return Check("tracefs", True, str(TRACEFS))
    mount_fix = f"mount -t tracefs nodev {TRACEFS}"
    if TRACEFS.is_dir() and _effective_caps() & (1 << CAP_SYS_ADMIN):
        return Check("tracefs", True, f"not mounted; the agent mounts it at {TRACEFS} at start")
    return Check("tracefs", False, "not mounted, and mounting it needs CAP_SYS_ADMIN", mount_fix)


def prepare() -> None:
    """Fix what can be fixed; raise CaptureError (one line + fix) otherwise."""
    if not has_bpf_permissions():
        raise CaptureError(
            f"eBPF capture needs root or {needed_capabilities()}",
            f"run as root (sudo lumen-agent run) or grant {needed_capabilities()}",
        )
    ensure_kernel_headers()
    ensure_tracefs()
    if not UPROBE_PMU.exists() and not (TRACEFS / "uprobe_events").exists():
        raise CaptureError(
            "this kernel has no uprobe support",
            "use a kernel built with CONFIG_UPROBES=y and CONFIG_UPROBE_EVENTS=y",
        )
