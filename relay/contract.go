package relay

// NATS message headers of the contract.
const (
	// HeaderConnectionID names the connection that must not receive the event.
	HeaderConnectionID = "X-Connection-Id"
	// HeaderEvent is the SSE event name.
	HeaderEvent = "Sse-Event"
	// HeaderMsgID is JetStream's de-duplication id.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderConnectionUser, when present, is the user whose connection
	// X-Connection-Id names: only that user's streams with the id are
	// skipped. POST /v1/publish sets it from the token, so that a user who
	// learns another user's connection id cannot make them miss events on a
	// shared feed.
	HeaderConnectionUser = "X-Connection-User"
)

// excludes reports whether an event published by connection msgConn of
// msgUser ("" = not said) must skip a session of user with connection conn.
func excludes(msgConn, msgUser, conn, user string) bool {
	return msgConn != "" && msgConn == conn && (msgUser == "" || msgUser == user)
}

// Reset reasons sent in sserelay.reset events.
const (
	ResetHistoryGone = "history-gone"
	ResetUnknownID   = "unknown-id"
)

// Events the relay itself sends.
const (
	EventConnected    = "sserelay.connected"
	EventReset        = "sserelay.reset"
	EventTokenExpired = "sserelay.token-expired"
)
