"""`python -m e2b_local` is the `e2b-local` command."""

from e2b_local.cli import main

raise SystemExit(main())
