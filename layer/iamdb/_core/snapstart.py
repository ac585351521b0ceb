"""Lambda SnapStart: start clean after a restore.

A snapshot freezes whatever init created: sockets that point at connections the server
has long closed, tokens signed minutes or days ago, role credentials that expired. When
the runtime offers SnapStart's runtime hooks (``snapshot_restore_py``, bundled with the
Python managed runtimes), iamdb registers one after-restore hook that resets the default
registry, so the first call after a restore signs, assumes and connects afresh.

``snapshot_restore_py`` absent is not an error (not :class:`~iamdb.errors.MissingDependencyError`):
it means the function does not run on SnapStart, so there is nothing to register.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def register_after_restore(reset: Callable[[], None]) -> bool:
    """Register ``reset`` to run after a SnapStart restore; False when not on SnapStart."""
    try:
        from snapshot_restore_py import register_after_restore as register
    except ImportError:
        return False
    register(reset)
    return True
