"""CreateSession's CPU per call against the sum of its floors, and where the rest goes.

``python -m bench.create_session`` runs ``vault-service emulator`` serving HTTPS (a test CA made
in the run's temporary directory, which the service trusts through ``VAULT_ANTOM_CA_FILE``) and
``vault-service serve`` on SQLite, drives CreateSession from this process at each
``--concurrency`` and reads every process's CPU from ``/proc``. In the same run it measures the
floors (``floors``): a bare grpc.aio unary call, an RSA-2048 signature and verification, an
aiohttp POST over kept-alive TLS to the same emulator and one store insert; the service's CPU
per CreateSession is judged against their sum. ``profile`` samples the running service with
py-spy and charges its samples to layers. Modules: ``load`` (the calls), ``floors``,
``bare_grpc`` (the bare server's program), ``profile``, ``__main__`` (the run and its page).
"""
