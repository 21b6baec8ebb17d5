"""Ways to load the hook into a program: the environment of ``lumen-agent
exec`` (and of a service), and the .pth file of ``hook install-pth``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from lumen_agent.errors import LumenError
from lumen_agent.hook import settings as hs

PTH_NAME = "lumen_agent_hook.pth"


class LaunchError(LumenError):
    """A user-facing failure of exec / install-pth (one line)."""


def site_dir() -> Path:
    """The folder to put first on PYTHONPATH: it holds the hook's sitecustomize.py."""
    return Path(__file__).resolve().parent / "sitedir"


def hook_env(base: Mapping[str, str], *, db: Path | None = None, mode: str | None = None,
             socket: Path | None = None) -> dict[str, str]:
    """``base`` plus what turns the hook on in every Python program started with it."""
    env = dict(base)
    here = str(site_dir())
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
    env["PYTHONPATH"] = os.pathsep.join([here, *parts])
    env[hs.ENV_ON] = "1"
    if db is not None:
        env[hs.ENV_DB] = str(db.expanduser().resolve())
    if mode is not None:
        if mode not in hs.MODES:
            raise LaunchError(f"--mode must be one of {', '.join(hs.MODES)}, not {mode!r}")
        env[hs.ENV_MODE] = mode
    if socket is not None:
        env[hs.ENV_SOCKET] = str(socket)
    return env


def pth_line() -> str:
    """The one line of the .pth file: on unless LUMEN_HOOK=0, never an error at startup."""
    here = str(site_dir())
    body = (f"try:\n import sys\n p = {here!r}\n p in sys.path or sys.path.append(p)\n"
            f" import lumen_hook_boot\n lumen_hook_boot.start('pth', default=True)\nexcept Exception:\n pass\n")
    return f"import sys; exec({body!r})\n"


def site_packages(python: str | None) -> Path:
    """The purelib folder of ``python`` (this interpreter when None)."""
    if python is None:
        import sysconfig

        return Path(sysconfig.get_paths()["purelib"])
    try:
        out = subprocess.run([python, "-c", "import json, sysconfig; print(json.dumps(sysconfig.get_paths()))"],
                             capture_output=True, text=True, timeout=30,
                             env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", hs.ENV_ON)})
    except (OSError, subprocess.SubprocessError) as exc:
        raise LaunchError(f"cannot run {python}: {exc}") from None
    if out.returncode != 0:
        raise LaunchError(f"{python} failed: {out.stderr.strip().splitlines()[-1:] or out.returncode}")
    return Path(json.loads(out.stdout)["purelib"])


def install_pth(python: str | None = None) -> Path:
    target = site_packages(python) / PTH_NAME
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(pth_line())
        os.replace(tmp, target)
    except OSError as exc:
        raise LaunchError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def uninstall_pth(python: str | None = None) -> Path | None:
    target = site_packages(python) / PTH_NAME
    try:
        target.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LaunchError(f"cannot remove {target}: {exc.strerror or exc}") from None
    return target
