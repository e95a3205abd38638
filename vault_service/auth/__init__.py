"""Who may call the gRPC API: callers, their scopes, and the token file that lists them."""
