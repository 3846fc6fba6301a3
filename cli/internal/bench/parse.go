package bench

import (
	"bytes"
	"math"
	"time"
)

// The parser: the stream's goroutine de-chunks what it reads and parses the
// events in place in its read buffer.

// Chunked body states.
const (
	csSize = iota // reading a chunk-size line
	csData        // in a chunk (or a body without chunked encoding)
	csCRLF        // after a chunk's data
	csEnd         // the last chunk was read
)

// Event kinds: the event field of a block.
const (
	kindData      = iota // no event field, or a publisher's name
	kindConnected        // sserelay.connected
	kindReset            // sserelay.reset
	kindExpired          // sserelay.token-expired
	kindReserved         // another sserelay.* event
)

// consume de-chunks the raw bytes in place, parses every complete line, and
// moves what is left (a partial line, a partial chunk header) to the front.
func (s *stream) consume(now int64) {
	b := s.buf
dechunk:
	for s.rStart < s.rEnd {
		switch s.cstate {
		case csSize:
			i := bytes.IndexByte(b[s.rStart:s.rEnd], '\n')
			if i < 0 {
				break dechunk
			}
			size, ok := parseHex(b[s.rStart : s.rStart+i])
			s.rStart += i + 1
			switch {
			case !ok:
				s.cstate, s.err = csEnd, errBadChunk
			case size == 0:
				s.cstate = csEnd
			default:
				s.cstate, s.chunkLeft = csData, size
			}
		case csData:
			k := min(s.chunkLeft, s.rEnd-s.rStart)
			if s.dEnd != s.rStart {
				copy(b[s.dEnd:], b[s.rStart:s.rStart+k])
			}
			s.dEnd += k
			s.rStart += k
			if s.chunkLeft -= k; s.chunkLeft == 0 {
				s.cstate = csCRLF
			}
		case csCRLF:
			if b[s.rStart] == '\n' {
				s.cstate = csSize
			}
			s.rStart++
		case csEnd:
			s.rStart = s.rEnd
		}
	}
	p := 0
	for {
		i := bytes.IndexByte(b[p:s.dEnd], '\n')
		if i < 0 {
			break
		}
		s.line(b[p:p+i], now)
		p += i + 1
	}
	if p > 0 {
		s.dEnd = copy(b, b[p:s.dEnd])
	}
	n := copy(b[s.dEnd:], b[s.rStart:s.rEnd])
	s.rStart, s.rEnd = s.dEnd, s.dEnd+n

	if s.batch > 0 {
		s.n.Add(s.batch)
		s.last.Store(now)
		s.batch = 0
		if s.onTarget != nil && len(s.got) >= s.target {
			f := s.onTarget
			s.onTarget = nil
			f(s, now)
		}
	}
	if s.connected && !s.signalled {
		s.signalled = true
		if s.conn != nil {
			_ = s.conn.SetReadDeadline(time.Time{})
		}
		s.onConnect(s, nil)
	}
}

func parseHex(b []byte) (int, bool) {
	n, digits := 0, 0
	for _, c := range b {
		var d int
		switch {
		case c >= '0' && c <= '9':
			d = int(c - '0')
		case c >= 'a' && c <= 'f':
			d = int(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = int(c-'A') + 10
		case c == ';' || c == '\r' || c == ' ':
			return n, digits > 0
		default:
			return 0, false
		}
		if digits++; digits > 8 {
			return 0, false
		}
		n = n<<4 | d
	}
	return n, digits > 0
}

// value returns a field's value: after the colon and one optional space.
func value(l []byte, n int) []byte {
	l = l[n:]
	if len(l) > 0 && l[0] == ' ' {
		l = l[1:]
	}
	return l
}

// line handles one line of the stream, as the WHATWG parser does for the
// fields this tool needs.
func (s *stream) line(l []byte, now int64) {
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	if len(l) == 0 {
		s.dispatch(now)
		return
	}
	switch l[0] {
	case ':':
		s.comments.Add(1)
	case 'i':
		if len(l) >= 3 && string(l[:3]) == "id:" {
			s.evID, s.evHasID = parseUint(value(l, 3))
		}
	case 'e':
		if len(l) >= 6 && string(l[:6]) == "event:" {
			switch v := value(l, 6); {
			case string(v) == "sserelay.connected":
				s.evKind = kindConnected
			case string(v) == "sserelay.reset":
				s.evKind = kindReset
			case string(v) == "sserelay.token-expired":
				s.evKind = kindExpired
			case bytes.HasPrefix(v, []byte("sserelay.")):
				s.evKind = kindReserved
			default:
				s.evKind = kindData
			}
		}
	case 'd':
		// The payload is {"t":<unix nanos>,"n":<counter>…}; only t is needed here.
		if len(l) >= 5 && string(l[:5]) == "data:" && !s.evHasT {
			if v := value(l, 5); len(v) > 5 && string(v[:5]) == `{"t":` {
				t, ok := parseUint(digits(v[5:]))
				s.evT, s.evHasT = int64(t), ok
			}
		}
	}
}

func digits(b []byte) []byte {
	for i, c := range b {
		if c < '0' || c > '9' {
			return b[:i]
		}
	}
	return b
}

func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// dispatch ends a block (a blank line).
func (s *stream) dispatch(now int64) {
	switch s.evKind {
	case kindData:
		if s.evHasID {
			s.record(now)
		} else if s.evHasT {
			s.badSeq++ // an event of ours without id
		}
	case kindConnected:
		if !s.connected {
			s.connected = true
			if s.evHasID && !s.resume {
				s.base = s.evID
			}
		}
	case kindReset:
		s.resets++
	case kindExpired:
		s.expired++
	}
	s.evHasID, s.evKind, s.evHasT = false, kindData, false
}

func (s *stream) record(now int64) {
	seq := s.evID
	switch {
	case seq <= s.base:
		s.stale++
		return
	case seq-s.base > math.MaxUint32:
		s.badSeq++
		return
	}
	s.got = append(s.got, uint32(seq-s.base))
	if seq > s.top.Load() {
		s.top.Store(seq) // only this goroutine writes it
	}
	s.batch++
	if s.evHasT && s.live != nil {
		lat := now - s.evT
		s.live.record(s.idx, lat)
		if s.extra != nil {
			if h := s.extra.Load(); h != nil {
				h.record(s.idx, lat)
			}
		}
	}
}
