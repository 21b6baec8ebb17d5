"""Spend control: budgets, alert rules, the ``alerts`` table and where alerts go.

* :mod:`.settings` - the ``[[budgets]]`` and ``[alerts]`` parts of the config file;
* :mod:`.periods` - calendar and rolling periods in a time zone;
* :mod:`.engine` - the rules, evaluated incrementally from the stream of calls;
* :mod:`.table` - the ``alerts`` table and rebuilding state from DuckDB at start;
* :mod:`.sinks` - log, webhook and command sinks, each on its own thread;
* :mod:`.gauges` - ``lumen_budget_used_ratio`` and ``lumen_alert_firing``;
* :mod:`.output` - the agent output that ties them together;
* :mod:`.guard` - budget enforcement in proxy mode.
"""
