"""One error family: every user-facing error is a LumenError, and the CLI
turns any of them into one ``error:`` line with exit 2."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from lumen_agent.agent_main import CaptureUnavailable
from lumen_agent.capture.kernel_setup import CaptureError
from lumen_agent.cli.app import user_errors
from lumen_agent.config import ConfigError
from lumen_agent.errors import LumenError
from lumen_agent.hook.launch import LaunchError
from lumen_agent.outputs.queries import QueryError
from lumen_agent.outputs.schema import SchemaError
from lumen_agent.pricing.table import PricingError
from lumen_agent.proxy.routes import RouteError
from lumen_agent.recording import RecordingError
from lumen_agent.top import AgentUnreachable

USER_ERRORS = [CaptureUnavailable, CaptureError, ConfigError, LaunchError, QueryError, SchemaError, PricingError,
               RouteError, RecordingError, AgentUnreachable]


@pytest.mark.parametrize("cls", USER_ERRORS, ids=lambda c: c.__name__)
def test_every_user_error_is_a_lumen_error_with_problem_and_fix(cls):
    exc = cls("the database is read-only", "pass --db with a writable path")
    assert isinstance(exc, LumenError)
    assert (exc.problem, exc.fix) == ("the database is read-only", "pass --db with a writable path")
    assert str(exc) == "the database is read-only (fix: pass --db with a writable path)"
    assert str(cls("no fix known")) == "no fix known"


@pytest.mark.parametrize("cls", USER_ERRORS, ids=lambda c: c.__name__)
def test_cli_prints_one_error_line_and_exits_2(cls):
    app = typer.Typer()

    @app.command()
    @user_errors
    def fail() -> None:
        raise cls("it broke\nsecond line never shown", "do this")

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2
    assert result.output == "error: it broke (fix: do this)\n"
