"""Suite-wide pytest configuration.

Keep this file to plugin registration: fixtures live in plugin modules listed here, one module
per concern, so that engineers add to the list instead of editing each other's fixtures.
"""

pytest_plugins = [
    "pytester",  # runs inner pytest sessions (used to test session-level fixtures)
    "tests.fixtures.rsa_keys",  # antom_key, merchant_key: generated once per session; next_key_file
    "tests.fixtures.data_keys",  # data_key_file, data_keys: the card-data key ring, per session
    "tests.fixtures.tls",  # server_ca, client_ca, stranger_ca, server_tls_files: a test PKI
    "tests.fixtures.antom",  # emulator, tls_emulator (a local Antom), antom_client
    "tests.fixtures.postgres",  # postgres_dsn: a fresh database per test (CI: never skipped)
    "tests.fixtures.stack",  # sqlite_store, hub, make_vaulting: the service's components
    "tests.fixtures.callers",  # token_file: a callers file with tokens added and removed
    "tests.fixtures.proxy",  # connect_proxy, authenticating_proxy: an egress CONNECT proxy
    "tests.fixtures.logs",  # captured_log: the service's JSON log lines, via logs.configure
    "tests.fixtures.inflation",  # inflations: request bodies aiohttp set out to decompress
    "tests.antom_sdk.fixtures",  # antom_sdk: the official Python SDK in its own virtualenv
    "tests.hypothesis_profile",  # Hypothesis without wall-clock deadlines (loaded before fuzz)
    "tests.fuzzing",  # @fuzz_property: the fuzz profile and case counts of scripts/fuzz
]
