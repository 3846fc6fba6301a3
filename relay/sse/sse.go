// Package sse encodes Server-Sent Events as the WHATWG HTML standard parses them.
//
// The encoder is append-style so that the relay can encode an event once into a
// shared buffer and hand the same bytes to every recipient.
package sse

import (
	"bytes"
	"strconv"
	"strings"
)

// AppendEvent appends one complete event block to dst: an "id:" line, an
// optional "event:" line, one "data:" line per line of data and the blank
// line that makes a client dispatch it.
//
// data is split on CR, LF and CRLF, the three line ends a client recognises,
// so no payload can end a field early and forge another one. The caller must
// have checked event with ValidEventName.
func AppendEvent(dst []byte, id uint64, event string, data []byte) []byte {
	dst = append(dst, "id: "...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, '\n')
	return AppendMessage(dst, event, data)
}

// AppendMessage is AppendEvent without an id: the client keeps its last one.
func AppendMessage(dst []byte, event string, data []byte) []byte {
	if event != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, event...)
		dst = append(dst, '\n')
	}
	dst = AppendData(dst, data)
	return append(dst, '\n')
}

// AppendData appends data as "data:" lines, one per line of data. Empty data
// still yields one "data:" line, so that the event is dispatched with data "".
func AppendData(dst []byte, data []byte) []byte {
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			return appendDataLine(dst, data)
		}
		dst = appendDataLine(dst, data[:i])
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

func appendDataLine(dst, line []byte) []byte {
	if len(line) == 0 {
		return append(dst, "data:\n"...)
	}
	dst = append(dst, "data: "...)
	dst = append(dst, line...)
	return append(dst, '\n')
}

// AppendComment appends a comment line, which clients ignore. Proxies see
// bytes flowing, which keeps idle streams open. text must not contain CR or LF.
func AppendComment(dst []byte, text string) []byte {
	dst = append(dst, ':')
	if text != "" {
		dst = append(dst, ' ')
		dst = append(dst, text...)
	}
	return append(dst, '\n')
}

// AppendRetry appends a "retry:" field that sets the client's reconnection
// delay in milliseconds. It is followed by a blank line so that it takes
// effect even when no event follows (clients apply retry at parse time).
func AppendRetry(dst []byte, ms int64) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, ms, 10)
	return append(dst, "\n\n"...)
}

// ReservedPrefix starts the names of the events the relay itself sends.
// Publishers may not use it, so a client can trust these events.
const ReservedPrefix = "sserelay."

// MaxEventNameLen bounds event names so that a header cannot bloat every frame.
const MaxEventNameLen = 128

// SafeEventName reports whether name can be written as an "event:" field at
// all: non-empty, no CR or LF (which would end the line and let the rest
// forge a field), no NUL, and not in the relay's reserved namespace. Events
// that NATS publishers send with other names are dropped.
func SafeEventName(name string) bool {
	return name != "" && !strings.ContainsAny(name, "\r\n\x00") && !strings.HasPrefix(name, ReservedPrefix)
}

// ValidEventName is the stricter rule for names given to POST /v1/publish,
// where a mistake can be answered with a 400: SafeEventName, at most
// MaxEventNameLen bytes, and no leading or trailing space (easy to send by
// accident, and a listener registered without it would never fire).
func ValidEventName(name string) bool {
	return SafeEventName(name) && len(name) <= MaxEventNameLen && name[0] != ' ' && name[len(name)-1] != ' '
}
