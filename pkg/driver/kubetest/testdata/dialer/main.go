// Command dialer is the workload of kubetest's bridge test, run in a pod:
// every 200 ms it connects to the test's listener at $REPORT_ADDR (the
// host, as the pod sees it) and sends one line, "$POD_NAME <iflink>",
// iflink being the index of the host end of its eth0 (a port of the
// node's bridge), until SIGTERM.
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	iflink, err := os.ReadFile("/sys/class/net/eth0/iflink")
	if err != nil {
		fmt.Fprintln(os.Stderr, "dialer:", err)
		os.Exit(1)
	}
	line := fmt.Sprintf("%s %s\n", os.Getenv("POD_NAME"), strings.TrimSpace(string(iflink)))
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-sig:
			return
		case <-tick.C:
		}
		conn, err := net.DialTimeout("tcp", os.Getenv("REPORT_ADDR"), time.Second)
		if err != nil {
			continue
		}
		conn.Write([]byte(line))
		conn.Close()
	}
}
