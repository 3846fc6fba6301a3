//go:build !unix

package embedded

import (
	"context"
	"log/slog"
	"time"
)

// lockStore does nothing where flock(2) is missing: there, keeping two
// relays off one --data-dir is the operator's job.
func lockStore(context.Context, string, time.Time, *slog.Logger) (func(), error) {
	return func() {}, nil
}
