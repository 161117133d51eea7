// Unmodified Server-Sent Events server on Go's net/http (Debian's golang, built offline:
// GO111MODULE=off), for wsguard's tests.
//
//	sse_go [PORT]
//
// Prints `READY <port>` once listening on 127.0.0.1. Every GET is answered with
// `Content-Type: text/event-stream`; the query string is the script shared with sse_node.js
// (see there and tests/src/sse.rs): `b` (hex body), `cuts` (offsets where a new write begins, or `every`,
// each flushed on its own ~2 ms apart), `end` (`server` ends the response after the body,
// `client` holds it open until the client goes away). With `raw=1` the handler hijacks the
// connection and writes the response head and the chunked framing itself, every piece between
// cuts as one chunk written in four flushed writes: the size, its CR, its LF with the first half
// of the data, the rest with the chunk's CRLF (and the terminator in two writes): splits
// inside chunk headers that net/http's own writer never makes.
package main

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

type script struct {
	writes [][]byte
	end    string
	raw    bool
}

func parse(r *http.Request) (script, error) {
	q := r.URL.Query()
	body, err := hex.DecodeString(q.Get("b"))
	if err != nil {
		return script{}, err
	}
	bounds := []int{0}
	if q.Get("cuts") == "every" {
		for n := 1; n < len(body); n++ {
			bounds = append(bounds, n)
		}
	} else {
		for _, c := range strings.Split(q.Get("cuts"), ",") {
			if n, err := strconv.Atoi(c); err == nil && n > 0 && n < len(body) {
				bounds = append(bounds, n)
			}
		}
	}
	bounds = append(bounds, len(body))
	s := script{end: q.Get("end"), raw: q.Get("raw") == "1"}
	for i := 0; i+1 < len(bounds); i++ {
		if bounds[i+1] > bounds[i] {
			s.writes = append(s.writes, body[bounds[i]:bounds[i+1]])
		}
	}
	return s, nil
}

func stream(w http.ResponseWriter, r *http.Request) {
	s, err := parse(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if s.raw {
		raw(w, s)
		return
	}
	f := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	f.Flush()
	for _, b := range s.writes {
		if _, err := w.Write(b); err != nil {
			return
		}
		f.Flush()
		time.Sleep(2 * time.Millisecond)
	}
	if s.end == "server" {
		return // net/http writes the chunked terminator
	}
	<-r.Context().Done() // the client went away
}

func raw(w http.ResponseWriter, s script) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	put := func(b []byte) bool {
		if _, err := buf.Write(b); err != nil {
			return false
		}
		time.Sleep(time.Millisecond)
		return buf.Flush() == nil
	}
	if !put([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")) {
		return
	}
	for _, b := range s.writes {
		h := len(b) / 2
		parts := [][]byte{[]byte(fmt.Sprintf("%x", len(b))), []byte("\r"), append([]byte("\n"), b[:h]...), append(append([]byte{}, b[h:]...), '\r', '\n')}
		for _, p := range parts {
			if !put(p) {
				return
			}
		}
	}
	if s.end == "server" {
		put([]byte("0\r"))
		put([]byte("\n\r\n"))
		// Wait for the client to close first: the stream ended with the terminator.
		one := make([]byte, 1)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf.Read(one)
		return
	}
	one := make([]byte, 1)
	conn.SetReadDeadline(time.Time{})
	buf.Read(one) // EOF: the client went away
}

func main() {
	port := "0"
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("READY %d\n", ln.Addr().(*net.TCPAddr).Port)
	http.Serve(ln, http.HandlerFunc(stream))
}
