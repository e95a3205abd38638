"""The gRPC transport: ``vault.v1.VaultService`` over the use cases in :mod:`vault_service.service`.

One module per job: :mod:`.validation` checks requests, :mod:`.mapping` converts between proto
messages and domain values, :mod:`.errors` turns exceptions into rich gRPC statuses,
:mod:`.servicer` implements the RPCs and :mod:`.server` builds the ``grpc.aio`` server with
health checking and reflection.
"""
