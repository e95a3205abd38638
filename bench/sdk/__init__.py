"""vault-service against the official SDK a team would embed instead (``global-open-sdk-python``).

``python -m bench.sdk`` runs ``vault-service emulator`` serving HTTPS on 127.0.0.1:443 (the SDK
always connects to port 443) with a certificate from a test CA made in the run's temporary
directory. The SDK (in its own virtualenv, ``.venv-antom-sdk``, as the tests use it) trusts that
CA through ``SSL_CERT_FILE``; the service through ``VAULT_ANTOM_CA_FILE``. At each
``--concurrency``, ``worker`` creates vaulting sessions with ``DefaultAlipayClient.execute()``
from that many threads, and this process drives CreateSession at that many concurrent calls on
``vault-service serve``. Every process's CPU is read from ``/proc``. Needs root (or
``CAP_NET_BIND_SERVICE``) for port 443 and ``scripts/bootstrap`` for ``.venv-antom-sdk``.
"""
