package cli

import (
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// env returns the environment variable of a flag: SSERELAY_<FLAG>.
func env(flag string) []string {
	return []string{"SSERELAY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

// Bound flags: each sets the field p points to, and its default is the
// value p holds when the flag is made. A misspelt name cannot silently read
// a default, as a c.String("...") lookup would.

func stringVar(p *string, category, name, usage string) *cli.StringFlag {
	return &cli.StringFlag{Name: name, EnvVars: env(name), Category: category, Usage: usage, Value: *p, Destination: p}
}

func durationVar(p *time.Duration, category, name, usage string) *cli.DurationFlag {
	return &cli.DurationFlag{Name: name, EnvVars: env(name), Category: category, Usage: usage, Value: *p, Destination: p}
}

func intVar(p *int, category, name, usage string) *cli.IntFlag {
	return &cli.IntFlag{Name: name, EnvVars: env(name), Category: category, Usage: usage, Value: *p, Destination: p}
}

func int64Var(p *int64, category, name, usage string) *cli.Int64Flag {
	return &cli.Int64Flag{Name: name, EnvVars: env(name), Category: category, Usage: usage, Value: *p, Destination: p}
}

func float64Var(p *float64, category, name, usage string) *cli.Float64Flag {
	return &cli.Float64Flag{Name: name, EnvVars: env(name), Category: category, Usage: usage, Value: *p, Destination: p}
}

func boolVar(p *bool, category, name, usage string) *cli.BoolFlag {
	return &cli.BoolFlag{Name: name, EnvVars: env(name), Category: category, Usage: usage, Value: *p, Destination: p}
}

// Unbound flag constructors, read by name (the bench command uses them).

func strFlag(name, value, usage string) cli.Flag {
	return &cli.StringFlag{Name: name, EnvVars: env(name), Value: value, Usage: usage}
}

func durFlag(name string, value time.Duration, usage string) cli.Flag {
	return &cli.DurationFlag{Name: name, EnvVars: env(name), Value: value, Usage: usage}
}

func intFlag(name string, value int, usage string) cli.Flag {
	return &cli.IntFlag{Name: name, EnvVars: env(name), Value: value, Usage: usage}
}

func floatFlag(name string, value float64, usage string) cli.Flag {
	return &cli.Float64Flag{Name: name, EnvVars: env(name), Value: value, Usage: usage}
}

func boolFlag(name, usage string) cli.Flag {
	return &cli.BoolFlag{Name: name, EnvVars: env(name), Usage: usage}
}
