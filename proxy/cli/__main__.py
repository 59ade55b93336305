"""`python -m proxy.cli`: the `airlock` command."""

from proxy.cli.main import main

raise SystemExit(main())
