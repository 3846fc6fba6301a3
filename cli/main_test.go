package cli

import (
	"fmt"
	"os"
	"testing"

	"github.com/sserelay/sserelay/test/testkit"
)

// bins holds the binaries built for this run.
var bins *testkit.Binaries

func TestMain(m *testing.M) {
	b, err := testkit.NewBinaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins = b
	code := m.Run()
	_ = bins.Remove()
	os.Exit(code)
}

// sserelayBin builds the sserelay binary once per run, for the tests that
// must see what a user sees: the exit status and the output of a process.
func sserelayBin(t *testing.T) string {
	t.Helper()
	return bins.Build(t, "sserelay", "github.com/sserelay/sserelay/cli/sserelay")
}
