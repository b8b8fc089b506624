"""Studies beyond the paper's tables: each module measures one question about the suite's models
and registers the sub-command that writes its results (``diffris.cli.COMMAND_MODULES``)."""
