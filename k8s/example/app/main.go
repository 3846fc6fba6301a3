// Command app is the smallest application that uses SSE Relay as its sidecar, for the examples and the pod
// tests: it publishes over NATS to the relay beside it, on the pod's loopback, and mints its users' tokens.
//
//	GET  /token?user=U   a token for user U (one hour), for the app APP_ID: what a login would hand out
//	POST /say?user=U     publishes the request body to user U's feed; answers {"seq":N}, the SSE id
//	GET  /healthz        200
//
// Environment: NATS_URL (default nats://127.0.0.1:4222), JWT_SECRET (required: the relay's HS256 secret),
// APP_ID (default example), APP_LISTEN (default 0.0.0.0:3000).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// token is what a feed or app id may hold: one NATS subject token, nothing that could widen a subject.
var token = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("app stopped", "err", err)
		os.Exit(1)
	}
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(log *slog.Logger) error {
	secret := os.Getenv("JWT_SECRET")
	if secret == "" {
		return errors.New("JWT_SECRET is required (the relay's --jwt-secret)")
	}
	app := getenv("APP_ID", "example")
	if !token.MatchString(app) {
		return fmt.Errorf("APP_ID %q: want letters, digits, _ or -", app)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// The relay may start after the app (podman has no native sidecars): keep trying.
	url := getenv("NATS_URL", "nats://127.0.0.1:4222")
	nc, err := nats.Connect(url, nats.Name("example-app"), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return fmt.Errorf("connect %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		if !token.MatchString(user) {
			reply(w, http.StatusBadRequest, map[string]any{"error": "user: want letters, digits, _ or -"})
			return
		}
		now := time.Now()
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": user, "apps": []string{app}, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		}).SignedString([]byte(secret))
		if err != nil {
			reply(w, http.StatusInternalServerError, map[string]any{"error": "sign token"})
			return
		}
		reply(w, http.StatusOK, map[string]any{"token": tok})
	})
	mux.HandleFunc("POST /say", func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		if !token.MatchString(user) {
			reply(w, http.StatusBadRequest, map[string]any{"error": "user: want letters, digits, _ or -"})
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			reply(w, http.StatusBadRequest, map[string]any{"error": "read body"})
			return
		}
		// A JetStream publish waits for the stream's acknowledgement: its sequence is the event's SSE id.
		pctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		ack, err := js.Publish(pctx, "sse."+app+"."+user, body)
		if err != nil {
			log.Warn("publish", "err", err)
			reply(w, http.StatusServiceUnavailable, map[string]any{"error": "publish: " + err.Error()})
			return
		}
		reply(w, http.StatusOK, map[string]any{"seq": ack.Sequence})
	})

	hs := &http.Server{Addr: getenv("APP_LISTEN", "0.0.0.0:3000"), Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.ListenAndServe() }()
	log.Info("app listening", "addr", hs.Addr, "nats_url", url, "app_id", app)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
