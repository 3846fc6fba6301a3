// Command sserelay is the SSE Relay server and its tools.
package main

import (
	"context"
	"os"

	"github.com/sserelay/sserelay/cli"
)

func main() { os.Exit(cli.Main(context.Background(), os.Args, os.Stderr)) }
