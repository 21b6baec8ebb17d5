// A stdlib-only Go client for the end-to-end tests: calls the fake provider
// the way a Go service would (net/http over crypto/tls) and prints one JSON
// line per call.  Configured by the same FAKE_* variables as the Node client
// in tests/support/clients.py; it trusts the test CA through SSL_CERT_FILE.
//
//	FAKE_URL, FAKE_METHOD, FAKE_HEADERS (JSON object), FAKE_BODY
//	FAKE_CALLS        calls per goroutine (default 1)
//	FAKE_CONCURRENCY  goroutines making calls at once (default 1)
//	FAKE_HTTP1=1      HTTP/1.1 only (TLSNextProto emptied: no h2 upgrade by ALPN)
//	FAKE_WAIT_MS      sleep before the first call
package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type result struct {
	Goroutine int    `json:"goroutine"`
	Call      int    `json:"call"`
	Status    int    `json:"status"`
	Proto     string `json:"proto"`
	RequestID string `json:"request_id"`
	Body      string `json:"body"`
	Error     string `json:"error,omitempty"`
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func main() {
	headers := map[string]string{}
	if h := os.Getenv("FAKE_HEADERS"); h != "" {
		if err := json.Unmarshal([]byte(h), &headers); err != nil {
			fmt.Fprintln(os.Stderr, "FAKE_HEADERS:", err)
			os.Exit(2)
		}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if os.Getenv("FAKE_HTTP1") == "1" {
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		transport.ForceAttemptHTTP2 = false
	} else {
		transport.ForceAttemptHTTP2 = true
	}
	// No automatic gzip: the agent must see what the test asked for.
	transport.DisableCompression = true
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}
	time.Sleep(time.Duration(envInt("FAKE_WAIT_MS", 0)) * time.Millisecond)

	calls, workers := envInt("FAKE_CALLS", 1), envInt("FAKE_CONCURRENCY", 1)
	method := os.Getenv("FAKE_METHOD")
	if method == "" {
		method = "GET"
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := false
	out := json.NewEncoder(os.Stdout)
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				r := result{Goroutine: g, Call: i}
				var body io.Reader
				if b, ok := os.LookupEnv("FAKE_BODY"); ok {
					body = strings.NewReader(b)
				}
				req, err := http.NewRequest(method, os.Getenv("FAKE_URL"), body)
				if err == nil {
					for k, v := range headers {
						req.Header.Set(k, v)
					}
					var res *http.Response
					res, err = client.Do(req)
					if err == nil {
						var data []byte
						data, err = io.ReadAll(res.Body)
						res.Body.Close()
						r.Status, r.Proto, r.Body = res.StatusCode, res.Proto, string(data)
						r.RequestID = res.Header.Get("x-request-id")
						if r.RequestID == "" {
							r.RequestID = res.Header.Get("request-id")
						}
					}
				}
				mu.Lock()
				if err != nil {
					r.Error = err.Error()
					failed = true
				}
				out.Encode(r)
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	transport.CloseIdleConnections()
	if failed {
		os.Exit(1)
	}
}
