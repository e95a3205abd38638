package vaultclient

import (
	"io/ioutil"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestFileCursorSavesAtomicallyAndReadsBack(t *testing.T) {
	dir, err := ioutil.TempDir("", "vault-cursor")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cursor := FileCursor{Path: filepath.Join(dir, "cursor")}
	if token, err := cursor.Load(); err != nil || token != "" {
		t.Fatalf("missing file: got %q, %v", token, err)
	}
	for _, token := range []string{"first", "second"} {
		if err := cursor.Save(token); err != nil {
			t.Fatal(err)
		}
	}
	if token, err := cursor.Load(); err != nil || token != "second" {
		t.Fatalf("got %q, %v", token, err)
	}
	entries, _ := ioutil.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %d entries", len(entries))
	}
}

func TestDetailsOfDecodesViolationsAntomReasonAndRetryDelay(t *testing.T) {
	st, err := status.New(codes.Unavailable, "retry later").WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "labels", Description: "too many"}}},
		&errdetails.ErrorInfo{Domain: AntomDomain, Reason: "UNKNOWN_EXCEPTION"},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
	)
	if err != nil {
		t.Fatal(err)
	}
	details := DetailsOf(st.Err())
	if details.Code != codes.Unavailable || details.AntomReason() != "UNKNOWN_EXCEPTION" || details.RetryDelay != 1500*time.Millisecond {
		t.Fatalf("got %+v", details)
	}
	if len(details.FieldViolations) != 1 || details.FieldViolations[0].GetField() != "labels" {
		t.Fatalf("violations: %v", details.FieldViolations)
	}
}

func TestBackoffStaysWithinItsStepAndHonoursTheFloor(t *testing.T) {
	b := newBackoff(100*time.Millisecond, 400*time.Millisecond)
	for _, step := range []time.Duration{100, 200, 400, 400} {
		step *= time.Millisecond
		if delay := b.next(0); delay < step/2 || delay > step {
			t.Fatalf("delay %s outside [%s, %s]", delay, step/2, step)
		}
	}
	if delay := b.next(time.Second); delay != time.Second {
		t.Fatalf("floor not honoured: %s", delay)
	}
}
