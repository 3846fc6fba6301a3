package sse

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Event is one event as an EventSource dispatches it.
type Event struct {
	// ID is the last event ID when the event was dispatched: set by the
	// event's own id field or inherited from an earlier block, as
	// MessageEvent.lastEventId is.
	ID string
	// Type is the value of the block's last event field. Empty means the
	// block had none (or an empty one): a browser dispatches it as "message".
	Type string
	// Data is the block's data lines joined with LF.
	Data string
}

// Field is one line of a block: a field name and its value after the colon
// (one leading space removed). A comment line has an empty Name and its text
// as Value (also with one leading space removed); no field line can have an
// empty name, since a line that starts with a colon is a comment.
type Field struct {
	Name  string
	Value string
}

// IsComment reports whether the line was a comment.
func (f Field) IsComment() bool { return f.Name == "" }

// Block is the lines up to a blank line and what a client makes of them.
// Tests use it to see what a browser would not show them: data-less blocks,
// retry hints, comments and which block carried an id field.
type Block struct {
	// Fields holds every line of the block in order, comments included.
	Fields []Field
	// Dispatched is whether the block dispatches Event: only a block with
	// at least one data field does (an empty "data:" line counts).
	Dispatched bool
	// Event is what the block dispatches. A block that dispatches nothing
	// still shows its event field and the last event ID (an id-only block
	// moves it).
	Event Event
	// HasID is whether the block had an id field that counted (one with a
	// NUL is ignored); its value is then Event.ID.
	HasID bool
	// Retry is the value of the block's last valid retry field, HasRetry
	// whether it had one.
	Retry    time.Duration
	HasRetry bool
}

// ErrTooLong is returned when a block exceeds the decoder's limit.
var ErrTooLong = errors.New("sse: block too long")

// A Decoder reads an event stream as the WHATWG HTML standard's
// event-stream interpretation does (§9.2.6): one leading BOM ignored,
// invalid UTF-8 replaced by U+FFFD, lines ended by CRLF, LF or a lone CR,
// comments skipped, data lines joined with LF, an id with NUL ignored, a
// retry that is not all ASCII digits ignored, events dispatched on a blank
// line, and a block left unfinished at the end of the stream discarded.
//
// When the reader returns an error other than [io.EOF] (a read deadline,
// say), the decoder returns it and keeps what it had read, so that a later
// call carries on where the stream left off.
type Decoder struct {
	r     io.Reader
	buf   []byte // buf[start:] is read and not yet parsed
	start int
	eof   bool
	err   error // a read error to return once the bytes read with it are parsed
	fatal error // ErrTooLong: the stream cannot be followed any more
	max   int

	started bool // the first line was seen (a BOM can only lead it)
	skipLF  bool // the last line ended with CR: a following LF is part of that line end

	lastID string
	retry  time.Duration
	cur    Block
	data   strings.Builder
	size   int // bytes in the current block
}

// NewDecoder returns a decoder that reads from r.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: r}
}

// Limit bounds the bytes of one block (its lines and their ends); a longer
// block makes the decoder return [ErrTooLong], on this call and every later
// one. Zero, the default, is no limit.
func (d *Decoder) Limit(n int) { d.max = n }

// LastEventID returns the last event ID: what a browser sends as
// Last-Event-ID when it reconnects.
func (d *Decoder) LastEventID() string { return d.lastID }

// Buffered returns the number of bytes read from the reader and not yet
// parsed: the reader's position minus Buffered is where the decoder is.
func (d *Decoder) Buffered() int { return len(d.buf) - d.start }

// Retry returns the reconnection time the stream set, or 0 if it set none.
func (d *Decoder) Retry() time.Duration { return d.retry }

// Next returns the next dispatched event, skipping blocks that dispatch
// nothing. At the end of the stream it returns [io.EOF].
func (d *Decoder) Next() (Event, error) {
	for {
		b, err := d.NextBlock()
		if err != nil {
			return Event{}, err
		}
		if b.Dispatched {
			return b.Event, nil
		}
	}
}

// NextBlock returns the next block that has at least one line, whether or
// not it dispatches an event. At the end of the stream it returns [io.EOF],
// discarding an unfinished block.
func (d *Decoder) NextBlock() (Block, error) {
	for {
		line, err := d.readLine()
		if err != nil {
			return Block{}, err
		}
		if line == "" {
			if b, ok := d.dispatch(); ok {
				return b, nil
			}
			continue
		}
		d.field(line)
	}
}

// field applies one non-blank line to the current block.
func (d *Decoder) field(line string) {
	name, value, ok := strings.Cut(line, ":")
	if ok {
		value = strings.TrimPrefix(value, " ")
	}
	d.cur.Fields = append(d.cur.Fields, Field{Name: name, Value: value})
	switch name {
	case "event":
		d.cur.Event.Type = value
	case "data":
		d.data.WriteString(value)
		d.data.WriteByte('\n')
		d.cur.Dispatched = true
	case "id":
		if !strings.ContainsRune(value, 0) {
			d.lastID = value
			d.cur.HasID = true
		}
	case "retry":
		if ms, ok := parseRetry(value); ok {
			d.retry = ms
			d.cur.Retry, d.cur.HasRetry = ms, true
		}
	}
}

// parseRetry accepts only ASCII digits, as the standard does; a value too
// large for a Duration is ignored too.
func parseRetry(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms > int64(time.Duration(1<<63-1)/time.Millisecond) {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

// dispatch ends the current block. It reports false for a block without
// lines (a blank line after a blank line).
func (d *Decoder) dispatch() (Block, bool) {
	b := d.cur
	b.Event.ID = d.lastID
	if b.Dispatched {
		b.Event.Data = strings.TrimSuffix(d.data.String(), "\n")
	}
	d.cur, d.size = Block{}, 0
	d.data.Reset()
	return b, len(b.Fields) > 0
}

// readLine returns the next line without its line end, decoded from UTF-8.
// An unterminated last line is discarded: io.EOF.
func (d *Decoder) readLine() (string, error) {
	if d.fatal != nil {
		return "", d.fatal
	}
	for {
		rest := d.buf[d.start:]
		if d.skipLF && len(rest) > 0 {
			d.skipLF = false
			if rest[0] == '\n' {
				d.start++
				continue
			}
		}
		if i := bytes.IndexAny(rest, "\r\n"); i >= 0 {
			d.size += i + 1
			if d.max > 0 && d.size > d.max {
				d.fatal = ErrTooLong
				return "", d.fatal
			}
			line := rest[:i]
			d.skipLF = rest[i] == '\r'
			d.start += i + 1
			if !d.started {
				d.started = true
				line = bytes.TrimPrefix(line, bom)
			}
			return decodeUTF8(line), nil
		}
		if d.max > 0 && d.size+len(rest) > d.max {
			d.fatal = ErrTooLong
			return "", d.fatal
		}
		if d.eof {
			return "", io.EOF
		}
		if err := d.fill(); err != nil {
			return "", err
		}
	}
}

var bom = []byte("\uFEFF")

// fill reads more bytes, keeping the unparsed ones.
func (d *Decoder) fill() error {
	if err := d.err; err != nil {
		d.err = nil
		return err
	}
	if d.start > 0 {
		n := copy(d.buf, d.buf[d.start:])
		d.buf, d.start = d.buf[:n], 0
	}
	if cap(d.buf)-len(d.buf) < 512 {
		nb := make([]byte, len(d.buf), 2*cap(d.buf)+4096)
		copy(nb, d.buf)
		d.buf = nb
	}
	n, err := d.r.Read(d.buf[len(d.buf):cap(d.buf)])
	d.buf = d.buf[:len(d.buf)+n]
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		d.eof = true
	case n == 0:
		return err
	default:
		d.err = err // parse the bytes first
	}
	return nil
}

// decodeUTF8 is the UTF-8 decode of the WHATWG Encoding standard: every
// maximal invalid subsequence becomes one U+FFFD (strings.ToValidUTF8
// would merge adjacent ones; Go's range loop would split a truncated
// sequence into one per byte). Decoding line by line is the same as
// decoding the whole stream, since CR and LF are never part of a
// multi-byte sequence.
func decodeUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, len(b)+8)
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		need, lo, hi := 0, byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			need = 1
		case c >= 0xE0 && c <= 0xEF:
			need = 2
			if c == 0xE0 {
				lo = 0xA0
			} else if c == 0xED {
				hi = 0x9F
			}
		case c >= 0xF0 && c <= 0xF4:
			need = 3
			if c == 0xF0 {
				lo = 0x90
			} else if c == 0xF4 {
				hi = 0x8F
			}
		default:
			out = utf8.AppendRune(out, utf8.RuneError)
			i++
			continue
		}
		j := i + 1
		for k := 0; k < need; k++ {
			if j >= len(b) || b[j] < lo || b[j] > hi {
				break
			}
			lo, hi = 0x80, 0xBF
			j++
		}
		if j-i == need+1 {
			out = append(out, b[i:j]...)
		} else {
			out = utf8.AppendRune(out, utf8.RuneError)
		}
		i = j
	}
	return string(out)
}
