// Command standin is a stand-in for the sandkey supervisor in the driver
// tests' container images: a static binary installed as /supervisor in a
// FROM scratch image whose entrypoint is ["/supervisor", "--"]. It is not
// the supervisor; it only reports, on stdout, what a supervisor would find
// in its sandbox, so that the tests can read it from the container's logs.
//
// Run as `/supervisor -- <mode> [args]`, it first prints one line
//
//	standin report {"args": [...], "env": [...], ...}
//
// (see report for the fields), then by mode:
//
//	serve        prints "standin token <content>" at every change of the
//	             token file it polls in $SANDKEY_TOKEN_DIR, and exits 0 on
//	             SIGTERM
//	ignore-term  ignores SIGTERM; only SIGKILL ends it
//	exit <code>  exits with code at once
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sandkey/sandkey/pkg/guest"
)

// pollInterval is how often serve reads the token file.
const pollInterval = 10 * time.Millisecond

// report is what the stand-in finds at start.
type report struct {
	Args []string `json:"args"`
	Env  []string `json:"env"`
	PID  int      `json:"pid"`
	// TokenDirWrite is the result of creating a file in the token
	// directory: "ok", or the error (read-only file system, as it must).
	TokenDirWrite string `json:"token_dir_write"`
	// Interfaces names the network interfaces the sandbox sees.
	Interfaces []string `json:"interfaces"`
	// Gateway is the result of dialing $SANDKEY_GATEWAY, sending
	// "hello <sandbox id>" and reading one line back: "ok: <line>", or the
	// error.
	Gateway string `json:"gateway"`
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) < 2 || args[0] != "--" {
		fmt.Fprintf(os.Stderr, "standin: usage: -- <mode> [args], got %q\n", args)
		return 2
	}
	mode := args[1]
	// As PID 1, a write to a log pipe the engine already closed at stop
	// must not end the stand-in: Go's runtime turns an unhandled SIGPIPE
	// it cannot die of into exit code 2, which reads as a failed stop.
	signal.Ignore(syscall.SIGPIPE)
	term := make(chan os.Signal, 1)
	if mode == "ignore-term" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(term, syscall.SIGTERM)
	}
	r := report{
		Args:          args,
		Env:           os.Environ(),
		PID:           os.Getpid(),
		TokenDirWrite: tryWrite(os.Getenv(guest.EnvTokenDir)),
		Interfaces:    interfaces(),
		Gateway:       hello(os.Getenv(guest.EnvGateway), os.Getenv(guest.EnvSandboxID)),
	}
	data, _ := json.Marshal(r)
	fmt.Printf("standin report %s\n", data)

	switch mode {
	case "serve":
		watchToken(os.Getenv(guest.EnvTokenDir), term)
		fmt.Println("standin term")
		return 0
	case "ignore-term":
		for {
			time.Sleep(time.Hour)
		}
	case "exit":
		if len(args) < 3 {
			return 2
		}
		code, _ := strconv.Atoi(args[2])
		return code
	}
	fmt.Fprintf(os.Stderr, "standin: unknown mode %q\n", mode)
	return 2
}

// tryWrite tries to create a file in dir.
func tryWrite(dir string) string {
	if dir == "" {
		return "no SANDKEY_TOKEN_DIR"
	}
	f, err := os.Create(filepath.Join(dir, "standin-probe"))
	if err != nil {
		return err.Error()
	}
	f.Close()
	return "ok"
}

func interfaces() []string {
	ifs, err := net.Interfaces()
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	names := make([]string, 0, len(ifs))
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names
}

// hello dials the gateway address (unix://path only), says hello and
// returns the answer.
func hello(addr, sandboxID string) string {
	path, ok := strings.CutPrefix(addr, "unix://")
	if !ok {
		return fmt.Sprintf("not a unix address: %q", addr)
	}
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "hello %s\n", sandboxID); err != nil {
		return err.Error()
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err.Error()
	}
	return "ok: " + strings.TrimSpace(line)
}

// watchToken polls dir/token until term, printing its content at every
// change. A read can race the writer's swap of ..data: it is just tried
// again at the next poll.
func watchToken(dir string, term <-chan os.Signal) {
	var last []byte
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "token")); err == nil && !bytes.Equal(data, last) {
			fmt.Printf("standin token %s\n", data)
			last = data
		}
		select {
		case <-term:
			return
		case <-tick.C:
		}
	}
}
