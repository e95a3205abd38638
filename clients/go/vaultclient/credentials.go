package vaultclient

import (
	"context"

	"google.golang.org/grpc/credentials"
)

// BearerToken returns per-call credentials that send "authorization: Bearer <token>", for
// grpc.WithPerRPCCredentials. They require TLS (grpc.WithTransportCredentials with
// credentials.NewTLS, a client certificate in its tls.Config for mTLS), unless
// allowPlaintext is set for a service on loopback.
func BearerToken(token string, allowPlaintext bool) credentials.PerRPCCredentials {
	return bearerToken{header: "Bearer " + token, requireTLS: !allowPlaintext}
}

type bearerToken struct {
	header     string
	requireTLS bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": b.header}, nil
}

func (b bearerToken) RequireTransportSecurity() bool {
	return b.requireTLS
}
