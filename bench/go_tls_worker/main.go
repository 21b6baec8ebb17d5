// Benchmark worker for bench/probe_cost.py --runtime go: N rounds of
// (*tls.Conn).Write on the client and (*tls.Conn).Read on the server of one
// in-process TLS connection (net.Pipe, no sockets), after "go" on stdin.
// Prints microseconds per crypto/tls call.
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	certFile, keyFile := os.Args[1], os.Args[2]
	n, _ := strconv.Atoi(os.Args[3])
	size, _ := strconv.Atoi(os.Args[4])
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		panic(err)
	}
	a, b := net.Pipe()
	srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{cert}})
	cli := tls.Client(b, &tls.Config{InsecureSkipVerify: true})
	done := make(chan error)
	go func() { done <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		panic(err)
	}
	if err := <-done; err != nil {
		panic(err)
	}
	msg := make([]byte, size)
	buf := make([]byte, size)
	readAll := func() {
		for got := 0; got < size; {
			m, err := srv.Read(buf[got:])
			if err != nil {
				panic(err)
			}
			got += m
		}
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	t0 := time.Now()
	go func() {
		for i := 0; i < n; i++ {
			if _, err := cli.Write(msg); err != nil {
				panic(err)
			}
		}
	}()
	for i := 0; i < n; i++ {
		readAll()
	}
	dt := time.Since(t0)
	fmt.Println(float64(dt.Microseconds()) / float64(2*n))
}
