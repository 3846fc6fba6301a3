package ssetest

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// server sends the first part, then waits for release, then the rest.
func server(t *testing.T, first, rest string, release <-chan struct{}) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/err" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"no token"}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		_, _ = io.WriteString(w, first)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, rest)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func open(t *testing.T, url string) *Stream {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	s, err := Open(nil, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestStream(t *testing.T) {
	release := make(chan struct{})
	srv := server(t, "retry: 100\n\nid: 1\nevent: a\ndata: x\n\nid: 2\nda", "ta: y\n\n: bye\n", release)
	s := open(t, srv.URL)

	b, err := s.NextBlock(10 * time.Second)
	if err != nil || b.Dispatched || !b.HasRetry || b.Retry != 100*time.Millisecond {
		t.Fatalf("first block %+v, %v: want the retry hint", b, err)
	}
	b, err = s.Next(10 * time.Second)
	if err != nil || b.Event.ID != "1" || b.Event.Type != "a" || b.Event.Data != "x" {
		t.Fatalf("event 1: %+v, %v", b, err)
	}
	// Half of event 2 is there: a timeout, and the stream stays usable.
	if _, err := s.Next(50 * time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("half an event: err %v, want ErrTimeout", err)
	}
	raw, err := s.WaitRaw(10*time.Second, func(raw string) bool { return strings.HasSuffix(raw, "\nda") })
	if err != nil || !strings.HasPrefix(raw, "retry: 100\n") {
		t.Fatalf("WaitRaw: %q, %v", raw, err)
	}
	close(release)
	b, err = s.Next(10 * time.Second)
	if err != nil || b.Event.ID != "2" || b.Event.Data != "y" {
		t.Fatalf("event 2 after the timeout: %+v, %v", b, err)
	}
	<-s.Done()
	if got := s.Raw()[s.Offset():]; got != ": bye\n" {
		t.Fatalf("after event 2: %q, want the trailing comment", got)
	}
	if _, err := s.Next(10 * time.Second); err != io.EOF {
		t.Fatalf("after the end: err %v, want io.EOF (the trailing comment dispatches nothing)", err)
	}
	<-s.Done()
	if s.Err() != io.EOF {
		t.Fatalf("Err = %v, want io.EOF for a clean end", s.Err())
	}
	if got := len(s.Blocks()); got != 3 {
		t.Fatalf("Blocks: %d, want 3 complete blocks", got)
	}
	if s.LastEventID() != "2" {
		t.Fatalf("LastEventID = %q", s.LastEventID())
	}
}

func TestOpenNotAStream(t *testing.T) {
	srv := server(t, "", "", nil)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/err", nil)
	_, err := Open(nil, req)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnauthorized || string(se.Body) != `{"error":"no token"}` {
		t.Fatalf("err %v, want a StatusError with 401 and the body", err)
	}
}

func TestCloseEndsReading(t *testing.T) {
	srv := server(t, ": hi\n", "", make(chan struct{}))
	s := open(t, srv.URL)
	if _, err := s.WaitRaw(10*time.Second, func(raw string) bool { return raw == ": hi\n" }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s.Err() == nil || s.Err() == io.EOF {
		t.Fatalf("after Close: Err %v, want the error of a cut read", s.Err())
	}
	s.Close() // twice is fine
}

// An on-demand stream reads nothing while no one waits for bytes.
func TestOnDemand(t *testing.T) {
	pr, pw := io.Pipe()
	s := NewOnDemand(pr)
	defer s.Close()
	wrote := make(chan error, 1)
	go func() {
		_, err := pw.Write([]byte("data: 1\n\n"))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("the write went through (%v) while no one read", err)
	case <-time.After(100 * time.Millisecond):
	}
	if b, err := s.Next(10 * time.Second); err != nil || b.Event.Data != "1" {
		t.Fatalf("Next: %+v, %v", b, err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if _, err := s.Next(10 * time.Second); err != io.EOF {
		t.Fatalf("after the end: %v, want io.EOF", err)
	}
}
