"""`python -m proxy.cli.main`: the `airlock` command."""

from proxy.cli.main import main

raise SystemExit(main())
