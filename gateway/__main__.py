"""``python3 -m gateway``: the same command as the installed ``gateway`` script (``gateway.cli``)."""

from gateway.cli import main

raise SystemExit(main())
