"""Suite-wide pytest configuration.

Keep this file to plugin registration: fixtures live in plugin modules listed here, one module
per concern, so that engineers add to the list instead of editing each other's fixtures.
"""

pytest_plugins = [
    "pytester",  # runs inner pytest sessions (used to test session-level fixtures)
    "tests.fixtures.keys",  # antom_key, merchant_key: generated once per session
    "tests.fixtures.antom",  # emulator (a running local Antom), antom_client pointed at it
    "tests.fixtures.stack",  # sqlite_store, hub, make_vaulting: the service's components
    "tests.fixtures.postgres",  # postgres_dsn: a fresh database per test (CI: never skipped)
    "tests.antom_sdk.fixtures",  # antom_sdk: the official Python SDK in its own virtualenv
]
