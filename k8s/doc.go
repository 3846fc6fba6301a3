// Package k8s holds the Kubernetes manifests of SSE Relay; it has no Go code of its own.
//
//   - sidecar/: the relay as a native sidecar of an application pod, in embedded NATS mode.
//   - nats-cluster/: a 3-node NATS JetStream cluster and a relay Deployment in external mode.
//
// The tests in this directory decode every manifest strictly into its typed Kubernetes object (an unknown or
// misspelt field fails) and check what the API server cannot: that the relay's flags and environment
// variables exist and parse (checked with the CLI's own flags), that probes, ports, selectors and Secrets
// line up, and that grace periods cover the relay's drain and the NATS lame duck mode. They are a Go module
// of their own, so that the root module needs no k8s.io packages: run them with `cd k8s && go test ./...`.
// See README.md for which manifests to pick.
package k8s
