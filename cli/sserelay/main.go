// Command sserelay is the SSE Relay server and its tools.
package main

import (
	"fmt"
	"os"

	"github.com/sserelay/sserelay/cli"
)

func main() {
	if err := cli.NewApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "sserelay:", err)
		os.Exit(1)
	}
}
