# Registered through the `pytest11` entry point, so it is active wherever the package is
# installed: in a module author's project as much as in ours. It therefore only adds
# fixtures that a test asks for by name; nothing is autouse, so unrelated test suites that
# happen to share an environment with oversip-hooks see no change.

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from loguru import logger

from ._harness import LifecycleHarness


@pytest.fixture
def loguru_caplog(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """``caplog``, with loguru's records in it too.

    Each record keeps loguru's level name (``NOTICE``, ``CRIT``...) as ``levelname``, and
    loguru's ``extra`` (``log_id``, ``user``) as ``record.extra``.

    Example::

        def test_warns(loguru_caplog):
            get_logger("pool").log_system_warn("low on connections")
            assert loguru_caplog.records[0].extra["log_id"] == "pool"
    """
    sink = logger.add(caplog.handler, level=0, format="{message}", catch=False)
    try:
        yield caplog
    finally:
        logger.remove(sink)


@pytest.fixture
def make_lifecycle(
    loguru_caplog: pytest.LogCaptureFixture,
) -> Iterator[Callable[..., LifecycleHarness]]:
    """A factory of isolated :class:`LifecycleHarness` objects, for a test that needs
    options or more than one harness: ``make_lifecycle(*plugins, shutdown_timeout=1)``,
    where a mapping names its plugins: ``make_lifecycle({"pool": Pool()})``.

    Each harness is isolated for the whole test: ``SystemCallbacks`` registrations made
    in the test go to its own registry, and nothing leaks into the next test.
    """
    with ExitStack() as stack:

        def make(*plugins: object, **options: Any) -> LifecycleHarness:
            harness = LifecycleHarness(*plugins, **options)
            stack.enter_context(harness.isolated())
            return harness

        yield make


@pytest.fixture
def lifecycle(make_lifecycle: Callable[..., LifecycleHarness]) -> LifecycleHarness:
    """An isolated :class:`LifecycleHarness` with no plugin yet: register yours.

    Example::

        async def test_pool_closes(lifecycle):
            lifecycle.register(PoolModule(), name="pool")
            async with lifecycle.running():
                pass
            assert lifecycle.trace[-1] == "pool.terminated(error=False)"
    """
    return make_lifecycle()
