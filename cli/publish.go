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

// publishConfig is what `sserelay publish` is configured with.
type publishConfig struct {
	NATS          natsConfig
	SubjectPrefix string
	Req           relay.PublishRequest
	// ConnectionUser is the X-Connection-User of --connection-id.
	ConnectionUser string
	Timeout        time.Duration
}

func publishCommand() *cli.Command {
	cfg := &publishConfig{NATS: natsConfig{URL: nats.DefaultURL}, SubjectPrefix: relay.DefaultConfig().SubjectPrefix, Timeout: 5 * time.Second}
	p := &cfg.Req
	return &cli.Command{
		Name:      "publish",
		Usage:     "publish one event through JetStream and print its stream sequence",
		ArgsUsage: "[DATA]  (no DATA or - reads stdin)",
		Flags: append(natsFlags(&cfg.NATS, catNATS, "NATS server URL(s), comma-separated"), []cli.Flag{
			stringVar(&cfg.SubjectPrefix, "", "subject-prefix", "first subject token"),
			&cli.StringFlag{Name: "app", EnvVars: env("app"), Usage: "app id (required)", Destination: &p.AppID},
			&cli.StringFlag{Name: "feed", EnvVars: env("feed"), Usage: "feed: a user id, or a shared feed (required)", Destination: &p.Feed},
			&cli.StringFlag{Name: "topic", EnvVars: env("topic"), Usage: "topic (tokens joined by '.')", Destination: &p.Topic},
			&cli.StringFlag{Name: "event", EnvVars: env("event"), Usage: "SSE event name (Sse-Event header)", Destination: &p.Event},
			&cli.StringFlag{Name: "connection-id", EnvVars: env("connection-id"), Usage: "connection that must not receive the event (X-Connection-Id header; with --connection-user)", Destination: &p.ConnectionID},
			&cli.StringFlag{Name: "connection-user", EnvVars: env("connection-user"), Usage: "the user whose connection --connection-id is (X-Connection-User header): without it the relay excludes no one, unless it runs with --exclusion-without-user", Destination: &cfg.ConnectionUser},
			&cli.StringFlag{Name: "id", EnvVars: env("id"), Usage: "de-duplication id, stored as the Nats-Msg-Id header as given: JetStream compares it across the whole stream, so scope it (e.g. <app>.<feed>.<service>.<id>)", Destination: &p.ID},
			&cli.DurationFlag{Name: "timeout", EnvVars: env("timeout"), Value: cfg.Timeout, Usage: "wait this long for the acknowledgement", Destination: &cfg.Timeout},
		}...),
		OnUsageError: usage,
		Before:       requireFlags("app", "feed"),
		Action:       func(c *cli.Context) error { return publish(c, cfg) },
	}
}

func publish(c *cli.Context, cfg *publishConfig) error {
	var data []byte
	switch arg := c.Args().First(); {
	case c.NArg() > 1:
		return usageError{errors.New("publish takes one DATA argument (quote it)")}
	case arg == "" || arg == "-":
		b, err := io.ReadAll(io.LimitReader(c.App.Reader, 8<<20))
		if err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		data = b
	default:
		data = []byte(arg)
	}
	p := cfg.Req
	p.Data = []byte(`""`) // validated separately: any bytes are fine here
	// The relay's own checks of a POST /v1/publish, which name its JSON fields: app_id is --app,
	// connection_id --connection-id, the others their flag. Bad flags, so a usage error.
	if err := p.Validate(); err != nil {
		return usageError{err}
	}
	if cfg.ConnectionUser != "" && p.ConnectionID == "" {
		return usageError{errors.New("--connection-user needs --connection-id")}
	}
	if p.ConnectionID != "" && cfg.ConnectionUser == "" {
		fmt.Fprintln(c.App.ErrWriter, "warning: --connection-id without --connection-user excludes no one unless the relay runs with --exclusion-without-user")
	}
	if err := cfg.NATS.check(); err != nil {
		return usageError{err}
	}
	opts, err := cfg.NATS.options()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(cfg.NATS.URL, append(opts, nats.Name("sserelay publish"))...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redactedURLs(cfg.NATS.URL), err)
	}
	defer nc.Close()
	var js jetstream.JetStream
	if cfg.NATS.Domain != "" {
		js, err = jetstream.NewWithDomain(nc, cfg.NATS.Domain)
	} else {
		js, err = jetstream.New(nc)
	}
	if err != nil {
		return err
	}
	msg := nats.NewMsg(subject.Join(cfg.SubjectPrefix, p.AppID, p.Feed, p.Topic))
	msg.Data = data
	for h, v := range map[string]string{relay.HeaderEvent: p.Event, relay.HeaderConnectionID: p.ConnectionID,
		relay.HeaderConnectionUser: cfg.ConnectionUser, relay.HeaderMsgID: p.ID} {
		if v != "" {
			msg.Header.Set(h, v)
		}
	}
	ctx, cancel := context.WithTimeout(c.Context, cfg.Timeout)
	defer cancel()
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return fmt.Errorf("publish to %s: %w", msg.Subject, err)
	}
	_, err = fmt.Fprintln(c.App.Writer, ack.Sequence)
	return err
}
