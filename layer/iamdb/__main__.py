"""``python -m iamdb``: see :mod:`iamdb._cli`."""

from iamdb._cli import main

raise SystemExit(main())
