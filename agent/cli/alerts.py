"""``lumen-agent budgets`` and ``lumen-agent alerts``: spend control from the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Optional

import typer

from lumen_agent.cli.app import ConfigOption, DbOption, FormatOption, SinceOption, _config, app, user_errors
from lumen_agent.cli.format import Format, render


@app.command()
@user_errors
def budgets(
    at: Annotated[Optional[str], typer.Option("--at", help="As of this ISO time instead of now.",
                                              show_default=False)] = None,
    db: DbOption = None,
    config_path: ConfigOption = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Each budget's spend this period, its limit, the percentage, the projected spend and thresholds fired."""
    from lumen_agent.outputs.alerts.report import budget_status
    from lumen_agent.outputs.queries import parse_since

    config = _config(config_path, db=db)
    when = parse_since(at) if at else datetime.now(UTC)
    result = budget_status(config.db, config.alerts, config.budgets, when)
    render(result.columns, result.rows, fmt)


@app.command()
@user_errors
def alerts(
    since: SinceOption = None,
    db: DbOption = None,
    config_path: ConfigOption = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Alerts that fired: rule, scope, model, value, threshold, fired_at, resolved_at (empty: still firing)."""
    from lumen_agent.outputs.alerts.report import alert_history

    config = _config(config_path, db=db)
    result = alert_history(config.db, since)
    render(result.columns, result.rows, fmt)
