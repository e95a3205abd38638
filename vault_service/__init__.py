"""vault-service: Antom card vaulting behind one gRPC contract."""
