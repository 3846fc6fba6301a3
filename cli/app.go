// Package cli wires the relay, the embedded NATS server, logging and the
// process lifecycle into the sserelay command.
package cli

import (
	"fmt"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// Version is set at build time with -ldflags "-X github.com/sserelay/sserelay/cli.Version=v1.2.3".
var Version = ""

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// NewApp returns the sserelay command line application.
func NewApp() *cli.App {
	return &cli.App{
		Name:                 "sserelay",
		Usage:                "serve NATS JetStream events to browsers and apps as Server-Sent Events",
		Version:              version(),
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			serveCommand(),
			tokenCommand(),
			publishCommand(),
			benchCommand(),
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					_, err := fmt.Fprintln(c.App.Writer, "sserelay", version())
					return err
				},
			},
		},
	}
}
