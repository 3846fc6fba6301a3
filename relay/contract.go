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

// PublishMsgID is the Nats-Msg-Id that POST /v1/publish stores for the id a
// publisher gave: "<app>.<feed>.<publisher>.<id>". JetStream de-duplicates
// over the whole stream, so an unscoped id would let one publisher's id
// swallow another's event (and answer with the other's seq). Scoped, only
// the same publisher's retry into the same feed of the same app is a
// duplicate. App, feed and publisher (the token's sub) are subject tokens,
// which never contain '.', so two different scopes never meet.
func PublishMsgID(app, feed, publisher, id string) string {
	return app + "." + feed + "." + publisher + "." + id
}

// exclusionID returns the connection id that an event with these headers
// excludes: "" when it names a connection but not its user and ids alone
// are not trusted (see [Config.ExclusionWithoutUser]). Live dispatch and
// store reads both go through it, so a resume skips what live skipped.
func exclusionID(connID, connUser string, withoutUser bool) string {
	if connUser == "" && !withoutUser {
		return ""
	}
	return connID
}

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
