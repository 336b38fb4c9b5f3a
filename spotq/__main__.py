"""`python -m spotq` is the `spotq` command."""

from spotq import cli

raise SystemExit(cli.main())
