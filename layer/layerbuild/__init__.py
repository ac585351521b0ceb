"""Builds and checks iamdb's Lambda layers: one per Python runtime and architecture.

Lambda's Python runtimes differ in what compiled code they load: each CPython minor version has
its own extension ABI and ``.pyc`` format, and python3.11 runs on Amazon Linux 2 (glibc 2.26)
where 3.12+ run on Amazon Linux 2023 (glibc 2.34). So iamdb publishes one layer per runtime and
architecture (``iamdb-python313-arm64``), as Powertools does, and the build refuses anything the
target could not load rather than shipping it.

- :mod:`layerbuild.targets`: the runtimes, architectures and their layers (the one table);
- :mod:`layerbuild.lock`: ``requirements.txt`` (one lock for every target) read for one target;
- :mod:`layerbuild.elf`: what a shared object needs to load (machine, glibc symbol versions);
- :mod:`layerbuild.checks`: every rule a built layer must pass, as a list of problems;
- :mod:`layerbuild.build`: pip for the target, iamdb, stripping, ``.pyc``, the checks;
- :mod:`layerbuild.pyodide`: ``.pyc`` by Pyodide's CPython for a runtime with no interpreter here;
- ``python -m layerbuild``: the command ``layer/Makefile`` runs (and ``sam build`` through it).

Standard library only (plus pip, which the build runs anyway): ``sam build`` runs it with
whatever ``python3`` the machine has, possibly inside a build container.
"""
