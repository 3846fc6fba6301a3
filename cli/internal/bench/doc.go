// Package bench is the load generator of SSE Relay: it opens many SSE
// streams on a running relay, publishes events through NATS JetStream or
// POST /v1/publish, and measures delivery (throughput, end-to-end latency,
// resume catch-up) and the relay process (RSS, CPU) while it checks that
// every stream got every event of its feed exactly once, in order.
//
// It shares the machine with the relay it measures, so the client side is
// lean: one goroutine and one read buffer per stream, a hand-written HTTP/1.1
// reader that parses events in place, and sharded fixed-size histograms.
package bench
