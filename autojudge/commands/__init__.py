"""CLI subcommands, one module per stage (see autojudge/cli.py)."""
