// vault-service's Go client. Built and tested here in GOPATH mode with Debian 12's Go 1.19 and
// gRPC 1.33 (clients/go/scripts/build). In module mode, run `go mod tidy` once: it adds the
// current google.golang.org/grpc, google.golang.org/protobuf and
// google.golang.org/genproto/googleapis/rpc and writes go.sum (see README.md).
module vault-service/clients/go

go 1.19
