package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/sserelay/sserelay/relay"
	"github.com/sserelay/sserelay/relay/subject"
)

func publishCommand() *cli.Command {
	return &cli.Command{
		Name:      "publish",
		Usage:     "publish one event through JetStream and print its stream sequence",
		ArgsUsage: "[DATA]  (no DATA or - reads stdin)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "nats-url", EnvVars: env("nats-url"), Value: nats.DefaultURL, Usage: "NATS server URL"},
			&cli.StringFlag{Name: "nats-creds", EnvVars: env("nats-creds"), Usage: "NATS credentials file"},
			&cli.StringFlag{Name: "subject-prefix", EnvVars: env("subject-prefix"), Value: "sse", Usage: "first subject token"},
			&cli.StringFlag{Name: "app", Required: true, Usage: "app id"},
			&cli.StringFlag{Name: "feed", Required: true, Usage: "feed: a user id, or a shared feed"},
			&cli.StringFlag{Name: "topic", Usage: "topic (tokens joined by '.')"},
			&cli.StringFlag{Name: "event", Usage: "SSE event name (Sse-Event header)"},
			&cli.StringFlag{Name: "connection-id", Usage: "connection that must not receive the event (X-Connection-Id header)"},
			&cli.StringFlag{Name: "id", Usage: "de-duplication id (Nats-Msg-Id header)"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "wait this long for the acknowledgement"},
		},
		Action: func(c *cli.Context) error {
			var data []byte
			switch arg := c.Args().First(); {
			case c.NArg() > 1:
				return errors.New("publish takes one DATA argument (quote it)")
			case arg == "" || arg == "-":
				b, err := io.ReadAll(io.LimitReader(c.App.Reader, 8<<20))
				if err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
				data = b
			default:
				data = []byte(arg)
			}
			p := relay.PublishRequest{
				AppID: c.String("app"), Feed: c.String("feed"), Topic: c.String("topic"),
				Event: c.String("event"), ConnectionID: c.String("connection-id"), ID: c.String("id"),
				Data: []byte(`""`), // validated separately: any bytes are fine here
			}
			if err := p.Validate(); err != nil {
				return err
			}
			opts := []nats.Option{nats.Name("sserelay publish")}
			if cr := c.String("nats-creds"); cr != "" {
				opts = append(opts, nats.UserCredentials(cr))
			}
			nc, err := nats.Connect(c.String("nats-url"), opts...)
			if err != nil {
				return fmt.Errorf("connect to %s: %w", c.String("nats-url"), err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			msg := nats.NewMsg(subject.Join(c.String("subject-prefix"), p.AppID, p.Feed, p.Topic))
			msg.Data = data
			for h, v := range map[string]string{relay.HeaderEvent: p.Event, relay.HeaderConnectionID: p.ConnectionID, relay.HeaderMsgID: p.ID} {
				if v != "" {
					msg.Header.Set(h, v)
				}
			}
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			ack, err := js.PublishMsg(ctx, msg)
			if err != nil {
				return fmt.Errorf("publish to %s: %w", msg.Subject, err)
			}
			_, err = fmt.Fprintln(c.App.Writer, ack.Sequence)
			return err
		},
	}
}
