package vaultclient

import (
	"context"
	"errors"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vaultv1 "vault-service/clients/go/vaultv1"
)

// scriptedServer answers the n-th StreamResults with scripts[n] and records the requests.
type scriptedServer struct {
	vaultv1.UnimplementedVaultServiceServer
	mu       sync.Mutex
	scripts  []func(vaultv1.VaultService_StreamResultsServer) error
	requests []*vaultv1.StreamResultsRequest
}

func (s *scriptedServer) StreamResults(request *vaultv1.StreamResultsRequest, stream vaultv1.VaultService_StreamResultsServer) error {
	s.mu.Lock()
	s.requests = append(s.requests, request)
	script := s.scripts[0]
	s.scripts = s.scripts[1:]
	s.mu.Unlock()
	return script(stream)
}

func checkpoint(token string) *vaultv1.StreamResultsResponse {
	return &vaultv1.StreamResultsResponse{Kind: &vaultv1.StreamResultsResponse_Checkpoint{Checkpoint: &vaultv1.Checkpoint{ResumeToken: token}}}
}

func event(token string) *vaultv1.StreamResultsResponse {
	return &vaultv1.StreamResultsResponse{Kind: &vaultv1.StreamResultsResponse_Event{Event: &vaultv1.ResultEvent{ResumeToken: token}}}
}

func TestFollowResumesAfterUnavailableFromTheLastHandledEvent(t *testing.T) {
	server := &scriptedServer{scripts: []func(vaultv1.VaultService_StreamResultsServer) error{
		func(stream vaultv1.VaultService_StreamResultsServer) error {
			stream.Send(checkpoint("t0"))
			stream.Send(event("t1"))
			return status.Error(codes.Unavailable, "draining")
		},
		func(stream vaultv1.VaultService_StreamResultsServer) error {
			stream.Send(checkpoint("t1"))
			stream.Send(event("t2"))
			<-stream.Context().Done()
			return nil
		},
	}}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	grpcServer := grpc.NewServer()
	vaultv1.RegisterVaultServiceServer(grpcServer, server)
	go grpcServer.Serve(listener)
	defer grpcServer.Stop()
	conn, err := grpc.Dial(listener.Addr().String(), grpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	cursor := &MemoryCursor{}
	stop := errors.New("stop")
	var handled []string
	reconnects := 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = Follow(ctx, vaultv1.NewVaultServiceClient(conn), FollowOptions{
		Cursor:         cursor,
		InitialBackoff: 10 * time.Millisecond,
		MaxBackoff:     20 * time.Millisecond,
		OnReconnect:    func(error, time.Duration) { reconnects++ },
	}, func(event *vaultv1.ResultEvent) error {
		handled = append(handled, event.GetResumeToken())
		if len(handled) == 2 {
			return stop
		}
		return nil
	})

	if err != stop {
		t.Fatalf("Follow returned %v", err)
	}
	if !reflect.DeepEqual(handled, []string{"t1", "t2"}) || reconnects != 1 {
		t.Fatalf("handled %v after %d reconnects", handled, reconnects)
	}
	if server.requests[0].GetResumeToken() != "" || server.requests[1].GetResumeToken() != "t1" {
		t.Fatalf("resumed from %q", server.requests[1].GetResumeToken())
	}
	if cursor.Token != "t1" {
		t.Fatalf("cursor %q: an event whose handler failed must not be saved", cursor.Token)
	}
}
