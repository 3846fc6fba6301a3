package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/sserelay/sserelay/relay/client"
)

// Read the events of a user's feed. The relay here is a real one, embedded
// in the example, and a backend publishes three events once the stream is
// open. A real program renews tokens with a TokenFunc that asks its auth
// service, and keeps LastEventID where it keeps the state the events
// update, so that a restart resumes from there.
func ExampleClient_Events() {
	relayURL, token, publish, stop := exampleRelay()
	defer stop()

	c, err := client.New(client.Config{
		URL:   relayURL,
		AppID: "app",
		Token: client.TokenFunc(func(ctx context.Context) (string, error) {
			return token, nil // ask your auth service here
		}),
		OnConnect: func(client.Connected) { go publish() },
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	for ev, err := range c.Events(ctx) {
		if err != nil {
			log.Fatal(err) // ctx ended, or the relay refused the stream for good
		}
		if ev.Reset != nil {
			fmt.Println("missed events:", ev.Reset.Reason) // reload the state, then go on
			continue
		}
		name := ev.Name
		if name == "" {
			name = "message" // as EventSource calls unnamed events
		}
		fmt.Println(name, ev.Data)
		if n++; n == 3 {
			break // closes the stream
		}
	}
	// Output:
	// order.created {"order":1}
	// order.paid {"order":1}
	// message a message without a name
}

// exampleRelay starts NATS and a relay for the example and returns its URL,
// a token of user alice, a function that publishes three events to alice's
// feed (once) and a function that stops everything.
func exampleRelay() (url, token string, publish, stop func()) {
	dir, err := os.MkdirTemp("", "sserelay-example-")
	if err != nil {
		log.Fatal(err)
	}
	e, err := startEnv(dir, envOptions{})
	if err != nil {
		log.Fatal(err)
	}
	token, err = e.token("alice", time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	var once sync.Once
	publish = func() { once.Do(func() { defer close(done); publishThree(e) }) }
	stop = func() {
		once.Do(func() { close(done) })
		<-done
		e.close()
		os.RemoveAll(dir)
	}
	return e.URL, token, publish, stop
}

func publishThree(e *relayEnv) {
	for _, ev := range [][2]string{{"order.created", `{"order":1}`}, {"order.paid", `{"order":1}`}, {"", "a message without a name"}} {
		var hdrs []string
		if ev[0] != "" {
			hdrs = []string{"Sse-Event", ev[0]}
		}
		if _, err := e.publish("sse.app.alice", ev[1], hdrs...); err != nil {
			log.Fatal(err)
		}
	}
}
