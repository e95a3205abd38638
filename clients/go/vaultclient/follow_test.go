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

func unreadable(token, id string) *vaultv1.StreamResultsResponse {
	return &vaultv1.StreamResultsResponse{Kind: &vaultv1.StreamResultsResponse_UnreadableEvent{
		UnreadableEvent: &vaultv1.UnreadableEvent{ResumeToken: token, VaultingRequestId: id, Reason: "corrupt"},
	}}
}

// serve runs server on a loopback port for the test's duration and returns a client of it.
func serve(t *testing.T, server vaultv1.VaultServiceServer) vaultv1.VaultServiceClient {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	grpcServer := grpc.NewServer()
	vaultv1.RegisterVaultServiceServer(grpcServer, server)
	go grpcServer.Serve(listener)
	t.Cleanup(grpcServer.Stop)
	conn, err := grpc.Dial(listener.Addr().String(), grpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return vaultv1.NewVaultServiceClient(conn)
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
	client := serve(t, server)

	cursor := &MemoryCursor{}
	stop := errors.New("stop")
	var handled []string
	reconnects := 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := Follow(ctx, client, FollowOptions{
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

// Regression: Follow skipped an UnreadableEvent as an unknown message kind, so the consumer never
// learned that a vaulting request's result changed and never re-read it with GetResult. It is
// handed to OnUnreadable in the event's place and its token saved only once that returned nil;
// without OnUnreadable, Follow stops with an UnreadableEventError before it.
func TestFollowHandsOverAnUnreadableEventInItsPlace(t *testing.T) {
	script := func(stream vaultv1.VaultService_StreamResultsServer) error {
		stream.Send(checkpoint("t0"))
		stream.Send(unreadable("t1", "vr-1"))
		stream.Send(event("t2"))
		<-stream.Context().Done()
		return nil
	}
	server := &scriptedServer{scripts: []func(vaultv1.VaultService_StreamResultsServer) error{script, script}}
	client := serve(t, server)
	cursor := &MemoryCursor{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A consumer written before UnreadableEvent existed: stopped, not silently moved past it.
	err := Follow(ctx, client, FollowOptions{Cursor: cursor}, func(*vaultv1.ResultEvent) error {
		t.Fatal("an event after the unreadable one was handled before it")
		return nil
	})
	var unhandled *UnreadableEventError
	if !errors.As(err, &unhandled) || unhandled.Event.GetVaultingRequestId() != "vr-1" {
		t.Fatalf("Follow without OnUnreadable returned %v", err)
	}
	if cursor.Token != "t0" {
		t.Fatalf("cursor %q: an unreadable event nobody handled must not be saved", cursor.Token)
	}

	stop := errors.New("stop")
	var handled, cursorWhenHandled []string
	err = Follow(ctx, client, FollowOptions{
		Cursor: cursor,
		OnUnreadable: func(event *vaultv1.UnreadableEvent) error {
			handled = append(handled, "unreadable "+event.GetVaultingRequestId())
			cursorWhenHandled = append(cursorWhenHandled, cursor.Token)
			return nil
		},
	}, func(event *vaultv1.ResultEvent) error {
		handled = append(handled, "event "+event.GetResumeToken())
		cursorWhenHandled = append(cursorWhenHandled, cursor.Token)
		return stop
	})

	if err != stop {
		t.Fatalf("Follow returned %v", err)
	}
	if !reflect.DeepEqual(handled, []string{"unreadable vr-1", "event t2"}) {
		t.Fatalf("handled %v", handled)
	}
	if !reflect.DeepEqual(cursorWhenHandled, []string{"t0", "t1"}) {
		t.Fatalf("cursor when handled %v: the unreadable event's token is saved once OnUnreadable returned", cursorWhenHandled)
	}
	if server.requests[0].GetResumeToken() != "" || server.requests[1].GetResumeToken() != "t0" {
		t.Fatalf("resumed from %q", server.requests[1].GetResumeToken())
	}
}

// pagedServer serves ListResults from results in pages of the request's page size, its page
// token the next index, and records the requests.
type pagedServer struct {
	vaultv1.UnimplementedVaultServiceServer
	results  []*vaultv1.VaultingResult
	requests []*vaultv1.ListResultsRequest
}

func (s *pagedServer) ListResults(_ context.Context, request *vaultv1.ListResultsRequest) (*vaultv1.ListResultsResponse, error) {
	s.requests = append(s.requests, request)
	start := 0
	if request.PageToken != "" {
		start = int(request.PageToken[0] - '0')
	}
	end := start + int(request.PageSize)
	if end >= len(s.results) {
		return &vaultv1.ListResultsResponse{Results: s.results[start:]}, nil
	}
	return &vaultv1.ListResultsResponse{Results: s.results[start:end], NextPageToken: string(rune('0' + end))}, nil
}

func TestListAllWalksEveryPageWithTheSameFilters(t *testing.T) {
	server := &pagedServer{}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		server.results = append(server.results, &vaultv1.VaultingResult{VaultingRequestId: id})
	}
	client := serve(t, server)
	filters := &vaultv1.ListResultsRequest{PageSize: 2, Labels: map[string]string{"batch": "x"}, PageToken: "ignored"}

	var seen []string
	err := ListAll(context.Background(), client, filters, func(result *vaultv1.VaultingResult) error {
		seen = append(seen, result.VaultingRequestId)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(seen, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("seen %v", seen)
	}
	var tokens []string
	for _, request := range server.requests {
		if request.Labels["batch"] != "x" || request.PageSize != 2 {
			t.Fatalf("a page lost the filters: %v", request)
		}
		tokens = append(tokens, request.PageToken)
	}
	if !reflect.DeepEqual(tokens, []string{"", "2", "4"}) {
		t.Fatalf("page tokens %v", tokens)
	}
	if filters.PageToken != "ignored" {
		t.Fatal("ListAll changed the caller's request")
	}

	stop := errors.New("enough")
	err = ListAll(context.Background(), client, filters, func(*vaultv1.VaultingResult) error { return stop })
	if err != stop || len(server.requests) != 4 {
		t.Fatalf("handle's error did not stop the walk at once: %v after %d calls", err, len(server.requests))
	}
}
