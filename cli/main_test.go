package cli

import (
	"os"
	"testing"

	"github.com/sserelay/sserelay/test/testkit"
)

// bins holds the binaries built for this run.
var bins *testkit.Binaries

func TestMain(m *testing.M) { os.Exit(testkit.RunTests(m, &bins)) }

// sserelayBin builds the sserelay binary once per run, for the tests that
// must see what a user sees: the exit status and the output of a process.
func sserelayBin(t *testing.T) string { return bins.Relay(t) }
