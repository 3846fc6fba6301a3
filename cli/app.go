// Package cli wires the relay, the embedded NATS server, logging and the
// process lifecycle into the sserelay command.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

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
// ctx ends, and returns the process's exit status: 0, ExitUsage for a usage
// error (a flag that means nothing, does not parse or is not there, a
// required flag left out, an unknown command), 1 for any other failure. It
// prints the error to stderr first.
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
		OnUsageError:         usage,
		// urfave/cli adds --help only when it adds its own help command, which helpCommand replaces.
		Flags: []cli.Flag{cli.HelpFlag},
		// Reached without a command, or with one that is not there: urfave/cli's default
		// would answer "No help topic" with exit status 3.
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return unknownCommand(c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
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
			helpCommand(),
		},
	}
}

// helpCommand replaces urfave/cli's help command, whose "help bogus" exits
// with status 3 rather than ExitUsage.
func helpCommand() *cli.Command {
	return &cli.Command{
		Name:      "help",
		Aliases:   []string{"h"},
		Usage:     "show the commands, or the help of one",
		ArgsUsage: "[command]",
		Action: func(c *cli.Context) error {
			name := c.Args().First()
			switch {
			case name == "":
				return cli.ShowAppHelp(c)
			case c.App.Command(name) == nil:
				return unknownCommand(name)
			}
			// Shown from the root's context, whose commands it looks name up in.
			return cli.ShowCommandHelp(c.Lineage()[1], name)
		},
	}
}

func unknownCommand(name string) error {
	return usageError{fmt.Errorf("unknown command %q: see sserelay --help", name)}
}

// requireFlags is the Before of a command that cannot run without the flags
// names (each set on the command line or through its variable). urfave/cli's
// own check (Required) fails with an error of an unexported type that Main
// cannot tell from any other failure, so it would exit 1, not ExitUsage.
func requireFlags(names ...string) cli.BeforeFunc {
	return func(c *cli.Context) error {
		var missing []string
		for _, n := range names {
			if !c.IsSet(n) {
				missing = append(missing, "--"+n)
			}
		}
		switch len(missing) {
		case 0:
			return nil
		case 1:
			return usageError{fmt.Errorf("%s is required", missing[0])}
		}
		return usageError{fmt.Errorf("%s are required", strings.Join(missing, " and "))}
	}
}
