package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// httpClient is a minimal HTTP/1.1 keep-alive client for POST /v1/publish:
// net/http's client costs more CPU and allocations per request
// (BenchmarkPublishClient compares the two against one loopback server), and
// this tool shares the machine with the relay it measures.
type httpClient struct {
	addr, host, auth string
	conn             net.Conn
	br               *bufio.Reader
	req              []byte
	resp             []byte
	deadline         time.Time // the connection's, renewed once a second
}

// hangGuard bounds a request that gets no answer; the deadline is moved
// once a second rather than twice per request (each move is a timer
// update in the runtime, on the machine being measured).
const hangGuard = 30 * time.Second

func (c *httpClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

var errHTTPStatus = errors.New("HTTP status")

func (c *httpClient) publish(body []byte) (uint64, error) {
	status, resp, err := c.post("/v1/publish", body)
	if err != nil {
		return 0, err
	}
	if status != 200 {
		msg := string(bytes.TrimSpace(resp))
		if len(msg) > 120 {
			msg = msg[:120]
		}
		return 0, fmt.Errorf("%w %d %s", errHTTPStatus, status, msg)
	}
	i := bytes.Index(resp, []byte(`"seq":`))
	if i < 0 {
		return 0, fmt.Errorf("no seq in %q", resp)
	}
	seq, ok := parseUint(digits(resp[i+6:]))
	if !ok {
		return 0, fmt.Errorf("bad seq in %q", resp)
	}
	return seq, nil
}

func (c *httpClient) post(path string, body []byte) (int, []byte, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 10*time.Second)
		if err != nil {
			return 0, nil, err
		}
		c.conn = conn
		c.deadline = time.Time{}
		if c.br == nil {
			c.br = bufio.NewReaderSize(conn, 4096)
		} else {
			c.br.Reset(conn)
		}
	}
	c.req = append(c.req[:0], "POST "...)
	c.req = append(c.req, path...)
	c.req = append(c.req, " HTTP/1.1\r\nHost: "...)
	c.req = append(c.req, c.host...)
	c.req = append(c.req, "\r\nUser-Agent: sserelay-bench\r\nContent-Type: application/json\r\nAuthorization: "...)
	c.req = append(c.req, c.auth...)
	c.req = append(c.req, "\r\nContent-Length: "...)
	c.req = strconv.AppendInt(c.req, int64(len(body)), 10)
	c.req = append(c.req, "\r\n\r\n"...)
	c.req = append(c.req, body...)
	if now := time.Now(); now.Add(hangGuard - time.Second).After(c.deadline) {
		c.deadline = now.Add(hangGuard)
		_ = c.conn.SetDeadline(c.deadline)
	}
	if _, err := c.conn.Write(c.req); err != nil {
		c.close()
		return 0, nil, err
	}
	status, resp, keep, err := c.readResponse()
	if err != nil || !keep {
		c.close()
	}
	return status, resp, err
}

func (c *httpClient) readResponse() (status int, body []byte, keep bool, err error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, false, fmt.Errorf("bad status line %q", line)
	}
	status, _ = strconv.Atoi(string(line[9:12]))
	keep = true
	length := -1
	for {
		h, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		k, v, _ := bytes.Cut(h, []byte(":"))
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			length, _ = strconv.Atoi(string(v))
		case bytes.EqualFold(k, []byte("Connection")):
			keep = !bytes.EqualFold(v, []byte("close"))
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			return 0, nil, false, errors.New("chunked publish response not supported")
		}
	}
	if length < 0 {
		// No length: the body runs to the end of the connection.
		c.resp, err = io.ReadAll(io.LimitReader(c.br, 1<<20))
		return status, c.resp, false, err
	}
	if cap(c.resp) < length {
		c.resp = make([]byte, length)
	}
	c.resp = c.resp[:length]
	if _, err := io.ReadFull(c.br, c.resp); err != nil {
		return 0, nil, false, err
	}
	return status, c.resp, keep, nil
}
