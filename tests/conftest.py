import os

from hypothesis import settings

# Deterministic in CI: the same examples on every run, and no per-example deadline on a
# shared, noisy machine.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# tests.processes: the `spawn` and `notify` fixtures, for the tests that run the command.
pytest_plugins = ["pytester", "tests.processes"]
