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

// Flag constructors: every flag of the long-running commands has its
// SSERELAY_ environment variable.
func strFlag(name, value, usage string) cli.Flag {
	return &cli.StringFlag{Name: name, EnvVars: env(name), Value: value, Usage: usage}
}

func durFlag(name string, value time.Duration, usage string) cli.Flag {
	return &cli.DurationFlag{Name: name, EnvVars: env(name), Value: value, Usage: usage}
}

func intFlag(name string, value int, usage string) cli.Flag {
	return &cli.IntFlag{Name: name, EnvVars: env(name), Value: value, Usage: usage}
}

func int64Flag(name string, value int64, usage string) cli.Flag {
	return &cli.Int64Flag{Name: name, EnvVars: env(name), Value: value, Usage: usage}
}

func floatFlag(name string, value float64, usage string) cli.Flag {
	return &cli.Float64Flag{Name: name, EnvVars: env(name), Value: value, Usage: usage}
}

func boolFlag(name, usage string) cli.Flag {
	return &cli.BoolFlag{Name: name, EnvVars: env(name), Usage: usage}
}
