package vaultclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/ioutil"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vaultv1 "vault-service/clients/go/vaultv1"
)

// CursorStore keeps a follower's resume token between reconnects and across restarts.
type CursorStore interface {
	// Load returns the saved token, or "" when there is none (the stream then starts from now).
	Load() (string, error)
	// Save replaces the saved token; it returns once the token is durable.
	Save(token string) error
}

// MemoryCursor keeps the token in memory: it resumes across reconnects, not across restarts.
type MemoryCursor struct{ Token string }

// Load returns the token in memory.
func (m *MemoryCursor) Load() (string, error) { return m.Token, nil }

// Save keeps token in memory.
func (m *MemoryCursor) Save(token string) error { m.Token = token; return nil }

// FileCursor keeps the token in a file, replaced atomically (written and synced beside it,
// then renamed over it), so a crash leaves the old token or the new one, never a torn file.
type FileCursor struct{ Path string }

// Load reads the token; a missing file is no token.
func (f FileCursor) Load() (string, error) {
	data, err := ioutil.ReadFile(f.Path)
	if os.IsNotExist(err) {
		return "", nil
	}
	return strings.TrimSpace(string(data)), err
}

// Save writes token atomically.
func (f FileCursor) Save(token string) error {
	dir := filepath.Dir(f.Path)
	tmp, err := ioutil.TempFile(dir, "."+filepath.Base(f.Path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err = tmp.WriteString(token + "\n"); err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.Path)
	}
	if err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		return err
	}
	return nil
}

// FollowOptions configure Follow; the zero value follows every request from now, in memory.
type FollowOptions struct {
	// Cursor keeps the resume token (default: a MemoryCursor).
	Cursor CursorStore
	// VaultingRequestIDs restricts the stream to these requests (at most 100).
	VaultingRequestIDs []string
	// InitialBackoff and MaxBackoff bound the jittered delay between reconnects
	// (defaults 100 ms and 5 s); a server's RetryInfo delay is the floor.
	InitialBackoff, MaxBackoff time.Duration
	// MaxReconnects gives up after this many reconnects in a row that received nothing
	// (0: never give up).
	MaxReconnects int
	// OnOpen, if set, is called whenever a stream delivered its first message (a checkpoint):
	// from then on it holds a cursor, so events recorded later cannot be missed.
	OnOpen func()
	// OnReconnect, if set, is called before each reconnect with the error and the delay.
	OnReconnect func(err error, delay time.Duration)
	// OnUnreadable handles, in its place in the stream, an event the service cannot read (its
	// stored data is corrupt): the change it recorded did happen, so re-read the request's
	// current result with GetResult(event.GetVaultingRequestId()). It counts like an event for
	// the cursor: its token is saved after OnUnreadable returned nil, and an error is returned
	// by Follow as is. Left nil, Follow stops with an *UnreadableEventError instead of skipping
	// the change (the cursor stays before it): set it in every consumer.
	OnUnreadable func(*vaultv1.UnreadableEvent) error
}

// UnreadableEventError is what Follow returns when the stream sends an UnreadableEvent and
// FollowOptions.OnUnreadable is nil. The cursor stays before that event, so the next Follow
// (with OnUnreadable set) gets it again.
type UnreadableEventError struct {
	Event *vaultv1.UnreadableEvent
}

func (e *UnreadableEventError) Error() string {
	return fmt.Sprintf("vaultclient: an event of vaulting request %q cannot be read (%s) and FollowOptions.OnUnreadable is not set to re-read it",
		e.Event.GetVaultingRequestId(), e.Event.GetReason())
}

// Follow calls handle for every result event, in order, until ctx ends (it then returns
// ctx.Err()), handle returns an error (returned as is), or the stream fails with a status
// other than UNAVAILABLE (returned as the gRPC error; DetailsOf reads it). A stream ended with
// UNAVAILABLE (a replica draining or dying, a connection aging out) is reopened from the last
// token after a jittered backoff, so each event reaches handle exactly once.
//
// An event's token is saved after handle returned nil for it; checkpoints move the cursor
// while nothing matches. In the place of an event the service cannot read, Follow calls
// opts.OnUnreadable instead of handle (a second handler rather than one taking either kind, so
// that handle keeps its type). A token the server refuses (INVALID_ARGUMENT on resume_token:
// too old or unknown) means events may have been missed: re-read them with GetResult, then
// clear the cursor. Message kinds newer than this package are skipped without moving the
// cursor.
func Follow(ctx context.Context, client vaultv1.VaultServiceClient, opts FollowOptions, handle func(*vaultv1.ResultEvent) error) error {
	cursor := opts.Cursor
	if cursor == nil {
		cursor = &MemoryCursor{}
	}
	token, err := cursor.Load()
	if err != nil {
		return err
	}
	backoff := newBackoff(opts.InitialBackoff, opts.MaxBackoff)
	reconnects := 0
	for {
		received, err := followOnce(ctx, client, opts, &token, cursor, handle)
		if received {
			reconnects = 0
			backoff.reset()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var streamErr streamError
		if !errors.As(err, &streamErr) {
			return err // handle's error, or the cursor store's
		}
		details := DetailsOf(streamErr.err)
		if details.Code != codes.Unavailable || (opts.MaxReconnects > 0 && reconnects >= opts.MaxReconnects) {
			return streamErr.err
		}
		reconnects++
		delay := backoff.next(details.RetryDelay)
		if opts.OnReconnect != nil {
			opts.OnReconnect(streamErr.err, delay)
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// streamError marks an error of the stream itself (as opposed to handle's or the cursor's).
type streamError struct{ err error }

func (e streamError) Error() string { return e.err.Error() }

// followOnce reads one stream to its end; received says whether any message arrived.
func followOnce(ctx context.Context, client vaultv1.VaultServiceClient, opts FollowOptions, token *string, cursor CursorStore, handle func(*vaultv1.ResultEvent) error) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.StreamResults(ctx, &vaultv1.StreamResultsRequest{
		ResumeToken:        *token,
		VaultingRequestIds: opts.VaultingRequestIDs,
	})
	if err != nil {
		return false, streamError{err}
	}
	received := false
	for {
		message, err := stream.Recv()
		if err == io.EOF {
			return received, streamError{errEndedWithoutStatus}
		}
		if err != nil {
			return received, streamError{err}
		}
		if !received && opts.OnOpen != nil {
			opts.OnOpen()
		}
		received = true
		var next string
		switch kind := message.GetKind().(type) {
		case *vaultv1.StreamResultsResponse_Event:
			if err := handle(kind.Event); err != nil {
				return received, err
			}
			next = kind.Event.GetResumeToken()
		case *vaultv1.StreamResultsResponse_UnreadableEvent:
			// Handed over like an event, so that its token is saved only once the consumer has
			// dealt with it: skipping it would lose the change it recorded.
			if opts.OnUnreadable == nil {
				return received, &UnreadableEventError{Event: kind.UnreadableEvent}
			}
			if err := opts.OnUnreadable(kind.UnreadableEvent); err != nil {
				return received, err
			}
			next = kind.UnreadableEvent.GetResumeToken()
		case *vaultv1.StreamResultsResponse_Checkpoint:
			next = kind.Checkpoint.GetResumeToken()
		default:
			continue
		}
		if next != *token {
			if err := cursor.Save(next); err != nil {
				return received, err
			}
			*token = next
		}
	}
}

// errEndedWithoutStatus is a stream the server closed with OK, which this service never does
// (its streams end with a status): reopened like a drained one.
var errEndedWithoutStatus = status.Error(codes.Unavailable, "StreamResults ended without a status")

type backoff struct {
	initial, max, step time.Duration
	// random is seeded per backoff: Go before 1.20 seeds math/rand's global source with 1, which
	// would bring every client back in lockstep.
	random *rand.Rand
}

func newBackoff(initial, max time.Duration) *backoff {
	if initial <= 0 {
		initial = 100 * time.Millisecond
	}
	if max < initial {
		max = 5 * time.Second
		if max < initial {
			max = initial
		}
	}
	return &backoff{initial: initial, max: max, step: initial, random: rand.New(rand.NewSource(time.Now().UnixNano()))}
}

// next is a delay drawn from the upper half of the current step (so clients cut off together
// do not return in lockstep), at least floor; the step doubles up to max.
func (b *backoff) next(floor time.Duration) time.Duration {
	delay := b.step/2 + time.Duration(b.random.Int63n(int64(b.step/2)+1))
	if b.step *= 2; b.step > b.max {
		b.step = b.max
	}
	if delay < floor {
		delay = floor
	}
	return delay
}

func (b *backoff) reset() { b.step = b.initial }
