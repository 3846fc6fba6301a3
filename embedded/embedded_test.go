package embedded

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestStartPublishRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	publish := func(listen string) uint64 {
		s, err := Start(ctx, Options{StoreDir: dir, Listen: listen})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Shutdown()
		if listen == "" && s.ClientURL() != "" {
			t.Fatalf("ClientURL() = %q without a listener", s.ClientURL())
		}
		opt := s.ConnectOption()
		url := ""
		if listen != "" {
			if s.ClientURL() == "" {
				t.Fatal("no client URL with a listener")
			}
			opt, url = nats.Name("test"), s.ClientURL()
		}
		nc, err := nats.Connect(url, opt)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
			t.Fatal(err)
		}
		ack, err := js.Publish(ctx, "t.x", []byte("hi"))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	if seq := publish(""); seq != 1 {
		t.Fatalf("first seq = %d, want 1", seq)
	}
	// Same store, now with a TCP listener on a free port: the sequence continues.
	if seq := publish("127.0.0.1:0"); seq != 2 {
		t.Fatalf("seq after restart = %d, want 2", seq)
	}
}

func TestStartRequiresStoreDir(t *testing.T) {
	if _, err := Start(context.Background(), Options{}); err == nil {
		t.Fatal("Start without StoreDir succeeded")
	}
}

func TestSyncOptionsReachJetStream(t *testing.T) {
	ctx := context.Background()
	s, err := Start(ctx, Options{StoreDir: t.TempDir(), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if c := s.NATS().JetStreamConfig(); c == nil || !c.SyncAlways {
		t.Fatalf("JetStream config %+v, want SyncAlways", c)
	}
	s2, err := Start(ctx, Options{StoreDir: t.TempDir(), SyncInterval: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown()
	if c := s2.NATS().JetStreamConfig(); c == nil || c.SyncInterval != 5*time.Second || c.SyncAlways {
		t.Fatalf("JetStream config %+v, want SyncInterval 5s", c)
	}
}
