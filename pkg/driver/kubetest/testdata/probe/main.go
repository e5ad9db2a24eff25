// Command probe is the workload of kubetest's smoke test, run in a pod:
// it reads the projected ServiceAccount token directory at $TOKEN_DIR,
// reports its layout and the token over TCP to the test's listener at
// $REPORT_ADDR (the host, as the pod sees it), then waits for SIGTERM.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// report is what the probe sends, one JSON line.
type report struct {
	DataLink  string `json:"data_link"`  // where ..data points
	TokenLink string `json:"token_link"` // where token points
	Token     string `json:"token"`
}

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
	<-sig
}

func run() error {
	dir := os.Getenv("TOKEN_DIR")
	var r report
	var err error
	if r.DataLink, err = os.Readlink(filepath.Join(dir, "..data")); err != nil {
		return err
	}
	if r.TokenLink, err = os.Readlink(filepath.Join(dir, "token")); err != nil {
		return err
	}
	tok, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil {
		return err
	}
	r.Token = string(tok)
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	addr := os.Getenv("REPORT_ADDR")
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			_, err = conn.Write(append(line, '\n'))
			conn.Close()
			if err == nil {
				fmt.Println("probe: reported to", addr)
			}
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("report to %s: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
