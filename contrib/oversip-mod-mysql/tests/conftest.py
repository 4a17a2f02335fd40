"""Fixtures of the MySQL module's tests: one private MariaDB server for the session
(oversip_mod_mysql.testing), an empty database for each test, and the real command in a
child process through the repository's own `spawn` (tests/processes.py)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import pytest

from oversip_mod_mysql.testing import PrivateServer

# The repository's child-process fixture, reused as it is; the tests run from the
# repository's root (`python -m pytest`), which puts the `tests` package on the path.
# Imported through pytest's assertion rewriting, as tests/conftest.py's pytest_plugins
# imports it: when this conftest is loaded first (these tests named before tests/ on the
# command line), a plain import would make that one fail with "already imported".
pytest.register_assert_rewrite("tests.processes")
from tests.processes import spawn  # noqa: E402, F401 - a fixture, found by its name


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    """A MariaDB server of the tests' own, started once, stopped at the end. When
    MariaDB is not installed the tests fail (never skip), naming the install script."""
    server = PrivateServer(tmp_path_factory.mktemp("mariadb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(mariadb: PrivateServer) -> PrivateServer:
    """The session's server, running (a test may have killed it), with an empty test
    database."""
    if not mariadb.running:
        mariadb.start()
    mariadb.admin(
        f"DROP DATABASE IF EXISTS {mariadb.database}", f"CREATE DATABASE {mariadb.database}"
    )
    return mariadb


@pytest.fixture(autouse=True)
def entry_point_installed() -> None:
    if not importlib.metadata.entry_points(group="oversip_hooks", name="mysql"):
        pytest.fail(
            "the entry point 'mysql' is not installed: pip install -e contrib/oversip-mod-mysql"
        )


@pytest.fixture
def server_py(tmp_path: Path) -> Path:
    return tmp_path / "server.py"
