// Package cli wires the relay, the embedded NATS server, logging and the
// process lifecycle into the sserelay command.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// Main runs the sserelay command line (args as os.Args) until it is done or
// ctx ends, and returns the process's exit status: 0, ExitUsage when a flag
// means nothing or does not parse, 1 for any other failure, which it prints
// to stderr first.
func Main(ctx context.Context, args []string, stderr io.Writer) int {
	return runApp(ctx, NewApp(), args, stderr)
}

// runApp is Main with the application given, so that a test can capture
// its stdout (app.Writer) too.
func runApp(ctx context.Context, app *cli.App, args []string, stderr io.Writer) int {
	app.ErrWriter = stderr
	err := app.RunContext(ctx, args)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "sserelay:", err)
	if ec, ok := errors.AsType[cli.ExitCoder](err); ok && ec.ExitCode() != 0 {
		return ec.ExitCode()
	}
	return 1
}

// NewApp returns the sserelay command line application. Its errors are
// returned, not turned into exits: Main picks the exit status.
func NewApp() *cli.App {
	return &cli.App{
		Name:                 "sserelay",
		ExitErrHandler:       func(*cli.Context, error) {},
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
