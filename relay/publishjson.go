package relay

import (
	"unicode/utf8"
)

// The publish body's fields, as decodePublish marks them seen.
const (
	fieldAppID = 1 << iota
	fieldFeed
	fieldTopic
	fieldEvent
	fieldData
	fieldConnectionID
	fieldID
)

// maxFastDepth bounds the nesting of data that decodePublish reads itself;
// deeper data goes to encoding/json (whose own bound is 10,000).
const maxFastDepth = 64

// decodePublish reads body as a publish request when it has the plain shape
// that every publisher sends: one object of the known fields, each once, with
// exact names, string values without escapes and in valid UTF-8, and data any
// JSON value. It returns the event's payload (what PublishRequest.payload
// returns), and reports false for anything else: the caller then decodes with
// encoding/json, which gives the same result or the error the client must
// see. So this decoder decides nothing: it only spares the common case
// encoding/json's reflection and its second pass over data (FuzzDecodePublish
// holds it to encoding/json's answers).
//
// p's strings are copies; p.Data is a slice of body, and so is nothing else.
func decodePublish(body []byte, p *PublishRequest) (payload []byte, ok bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil, false
	}
	i = skipSpace(body, i+1)
	var seen int
	var dataWS, dataStr bool
	if i < len(body) && body[i] == '}' {
		i++
	} else {
		for {
			if i >= len(body) || body[i] != '"' {
				return nil, false
			}
			ks, ke, ok := plainString(body, i)
			if !ok {
				return nil, false
			}
			var f int
			var dst *string // where a string field's value goes; nil for data
			switch string(body[ks:ke]) {
			case "app_id":
				f, dst = fieldAppID, &p.AppID
			case "feed":
				f, dst = fieldFeed, &p.Feed
			case "topic":
				f, dst = fieldTopic, &p.Topic
			case "event":
				f, dst = fieldEvent, &p.Event
			case "data":
				f = fieldData
			case "connection_id":
				f, dst = fieldConnectionID, &p.ConnectionID
			case "id":
				f, dst = fieldID, &p.ID
			default:
				return nil, false // unknown, or a name encoding/json matches without regard to case
			}
			if seen&f != 0 {
				return nil, false
			}
			seen |= f
			i = skipSpace(body, ke+1)
			if i >= len(body) || body[i] != ':' {
				return nil, false
			}
			i = skipSpace(body, i+1)
			if dst == nil {
				end, ws, ok := skipValue(body, i, 0)
				if !ok {
					return nil, false
				}
				p.Data = body[i:end:end]
				dataWS, dataStr = ws, body[i] == '"'
				i = end
			} else {
				if i >= len(body) || body[i] != '"' {
					return nil, false // null, or a type encoding/json refuses
				}
				vs, ve, ok := plainString(body, i)
				if !ok {
					return nil, false
				}
				*dst = string(body[vs:ve])
				i = ve + 1
			}
			i = skipSpace(body, i)
			if i >= len(body) {
				return nil, false
			}
			if body[i] == '}' {
				i++
				break
			}
			if body[i] != ',' {
				return nil, false
			}
			i = skipSpace(body, i+1)
		}
	}
	if skipSpace(body, i) != len(body) {
		return nil, false
	}
	if len(p.Data) == 0 {
		return nil, true // Validate says what is missing
	}
	switch {
	case dataStr:
		// A JSON string: its text. Escapes or invalid UTF-8 (which
		// encoding/json replaces) go the long way.
		s, e, ok := plainString(p.Data, 0)
		if !ok || e != len(p.Data)-1 {
			return nil, false
		}
		return append(make([]byte, 0, e-s), p.Data[s:e]...), true
	case dataWS:
		return appendCompact(make([]byte, 0, len(p.Data)), p.Data), true
	default:
		return append(make([]byte, 0, len(p.Data)), p.Data...), true
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// plainString reads the string that starts at b[i] (a quote) and returns the
// bounds of its text, which decodes to itself: it reports false for an
// escape, a control character or invalid UTF-8.
func plainString(b []byte, i int) (start, end int, ok bool) {
	start = i + 1
	ascii := true
	for j := start; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:j]) {
				return 0, 0, false
			}
			return start, j, true
		case c == '\\' || c < 0x20:
			return 0, 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return 0, 0, false
}

// skipValue checks the JSON value at b[i] as encoding/json's scanner does
// and returns where it ends, and whether it has space outside its strings.
func skipValue(b []byte, i, depth int) (end int, ws, ok bool) {
	if i >= len(b) {
		return 0, false, false
	}
	switch c := b[i]; {
	case c == '"':
		end, ok = skipString(b, i)
		return end, false, ok
	case c == '{' || c == '[':
		if depth >= maxFastDepth {
			return 0, false, false
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		j := skipSpace(b, i+1)
		ws = j > i+1
		if j < len(b) && b[j] == closer {
			return j + 1, ws, true
		}
		for {
			k := j
			if c == '{' {
				if k >= len(b) || b[k] != '"' {
					return 0, false, false
				}
				if k, ok = skipString(b, k); !ok {
					return 0, false, false
				}
				n := skipSpace(b, k)
				ws = ws || n > k
				if n >= len(b) || b[n] != ':' {
					return 0, false, false
				}
				k = skipSpace(b, n+1)
				ws = ws || k > n+1
			}
			e, w, ok := skipValue(b, k, depth+1)
			if !ok {
				return 0, false, false
			}
			n := skipSpace(b, e)
			ws = ws || w || n > e
			if n >= len(b) {
				return 0, false, false
			}
			if b[n] == closer {
				return n + 1, ws, true
			}
			if b[n] != ',' {
				return 0, false, false
			}
			j = skipSpace(b, n+1)
			ws = ws || j > n+1
		}
	case c == '-' || c >= '0' && c <= '9':
		end, ok = skipNumber(b, i)
		return end, false, ok
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	}
	return 0, false, false
}

func literal(b []byte, i int, lit string) (int, bool, bool) {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit), false, true
	}
	return 0, false, false
}

// skipString checks the string at b[i] with its escapes (its bytes are
// taken as they are, as encoding/json takes a raw value's) and returns the
// index after its closing quote.
func skipString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, true
		case c < 0x20:
			return 0, false
		case c == '\\':
			j++
			if j >= len(b) {
				return 0, false
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-j < 5 {
					return 0, false
				}
				for _, h := range b[j+1 : j+5] {
					if !isHex(h) {
						return 0, false
					}
				}
				j += 4
			default:
				return 0, false
			}
		}
	}
	return 0, false
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// skipNumber checks the number at b[i] against JSON's grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	digits := func() bool {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > start
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return 0, false
		}
	}
	return i, true
}

// appendCompact appends the valid JSON value v without the space outside
// its strings.
func appendCompact(dst, v []byte) []byte {
	inStr := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inStr:
			if c == '\\' {
				dst = append(dst, c)
				i++
				c = v[i]
			} else if c == '"' {
				inStr = false
			}
		case c == '"':
			inStr = true
		case isSpace(c):
			continue
		}
		dst = append(dst, c)
	}
	return dst
}
