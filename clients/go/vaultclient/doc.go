// Package vaultclient is the small hand-written part of vault-service's Go client: a
// StreamResults follower that resumes by itself (Follow), a ListResults walk over every page
// (ListAll), the google.rpc error details of a failed call (DetailsOf), and bearer-token call
// credentials (BearerToken). The generated
// stubs are in package vaultv1.
//
// It builds with the Go toolchain and gRPC of Debian 12 (Go 1.19, google.golang.org/grpc
// 1.33, GOPATH mode) and with current ones (modules, see go.mod): it uses nothing newer than
// Go 1.19's standard library and gRPC 1.33's API.
package vaultclient
