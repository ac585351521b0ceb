"""``python -m iamdb``: see :mod:`iamdb.cli`."""

from iamdb.cli import main

raise SystemExit(main())
