"""Optional dependencies: a driver or extra that is missing is named, with what to install.

iamdb imports every driver and integration on the path that needs it (cold start is a
feature), so a missing one shows at that point: :func:`requires` turns the ``ImportError`` into
:class:`~iamdb.errors.MissingDependencyError`, before any network call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from iamdb.errors import MissingDependencyError


@contextmanager
def requires(extra: str, variable: str) -> Iterator[None]:
    """Around the imports of an optional driver: an ImportError becomes
    :class:`~iamdb.errors.MissingDependencyError` naming the extra to install (``extra``) and
    the setting (or module) that asked for it (``variable``).

    The one policy for a missing driver. What iamdb uses only when present stays optional
    and does not come through here: Powertools (:mod:`iamdb._core.telemetry`,
    :mod:`iamdb._core.log`), SnapStart's hooks (:mod:`iamdb._core.snapstart`), botocore's
    credential chain (:mod:`iamdb._aws.chain`).
    """
    failure = None
    try:
        yield
    except MissingDependencyError:
        raise
    except ImportError as exc:
        failure = MissingDependencyError(variable, exc.name or "a module", extra, str(exc))
    if failure is not None:
        raise failure
