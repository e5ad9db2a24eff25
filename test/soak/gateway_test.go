package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/store"
	"github.com/sandkey/sandkey/test/binaries"
)

// gatewayProc is the real gateway binary running `serve`, restarted by
// the chaos loop after each crash.
type gatewayProc struct {
	state    string
	logPath  string
	lifetime time.Duration
	http     *http.Client

	// cmd and done belong to the goroutine that starts and stops the
	// gateway (the chaos loop, then the test's teardown).
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	// addr is where /jwks.json is served while the gateway is up (found
	// in its log), nil while it is down; the checker reads it.
	addr atomic.Pointer[string]
}

func newGatewayProc(dir string, lifetime time.Duration) *gatewayProc {
	return &gatewayProc{state: filepath.Join(dir, "state"), logPath: filepath.Join(dir, "gateway.log"), lifetime: lifetime,
		http: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
}

// start runs `gateway serve` and returns once its operator API answers
// (it has reconciled every sandbox by then) and its HTTP address is known.
func (g *gatewayProc) start(ctx context.Context) error {
	logf, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	offset, _ := logf.Seek(0, io.SeekEnd)
	// The sweep interval is the crash test's: rotations land anywhere in
	// a crash's timing.
	cmd := exec.Command(binaries.Gateway, "serve", "--state-dir", g.state, "--token-lifetime", g.lifetime.String(),
		"--sweep-interval", "100ms", "--heartbeat-interval", "1s", "--http-addr", "127.0.0.1:0",
		"--supervisor", binaries.Supervisor, "--stop-grace", "1s",
		// Keys published by `keys rotate` activate within the soak's
		// timescale, so both halves of a rotation happen under chaos.
		"--jwks-max-age", "1s", "--key-publish-delay", "2s")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a signal meant for the test never reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start gateway: %w", err)
	}
	// The one Wait of the process; kill and stop wait for done.
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	g.cmd, g.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for {
		if addr := g.findHTTPAddr(offset); addr != "" {
			if _, err := g.cli(ctx, "sandbox", "list"); err == nil {
				g.addr.Store(&addr)
				return nil
			}
		}
		select {
		case <-done:
			g.cmd = nil
			return fmt.Errorf("gateway exited at start; see %s", g.logPath)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			g.kill()
			return fmt.Errorf("gateway did not come up within 30 s; see %s", g.logPath)
		}
	}
}

// findHTTPAddr reads the address of the gateway's HTTP server from the
// log it wrote since offset.
func (g *gatewayProc) findHTTPAddr(offset int64) string {
	f, err := os.Open(g.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var e struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Msg == "http serving" {
			return e.Addr
		}
	}
	return ""
}

// kill ends the gateway with SIGKILL, as a crash would. Its sandboxes are
// in sessions of their own and keep running.
func (g *gatewayProc) kill() {
	if g.cmd == nil {
		return
	}
	g.addr.Store(nil)
	g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.done
	g.cmd = nil
}

// stop ends the gateway with SIGTERM, then SIGKILL after 10 s.
func (g *gatewayProc) stop() {
	if g.cmd == nil {
		return
	}
	g.addr.Store(nil)
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		g.cmd.Process.Signal(syscall.SIGKILL)
		<-g.done
	}
	g.cmd = nil
}

// up reports whether the gateway is serving (for any goroutine).
func (g *gatewayProc) up() bool { return g.addr.Load() != nil }

// cli runs the gateway's command line against this gateway.
func (g *gatewayProc) cli(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, binaries.Gateway, append([]string{"--state-dir", g.state}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("gateway %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// listed is a sandbox as `sandbox list -o json` shows it.
type listed struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	State        string `json:"state"`
	LatestGen    uint64 `json:"latest_gen"`
	DeliveredGen uint64 `json:"delivered_gen"`
	Connected    bool   `json:"connected"`
}

func (g *gatewayProc) list(ctx context.Context) ([]listed, error) {
	out, err := g.cli(ctx, "sandbox", "list", "-o", "json")
	if err != nil {
		return nil, err
	}
	var all []listed
	if err := json.Unmarshal(out, &all); err != nil {
		return nil, fmt.Errorf("sandbox list -o json: %w: %s", err, out)
	}
	return all, nil
}

// jwks fetches the public keys the gateway serves.
func (g *gatewayProc) jwks(ctx context.Context) (*auth.JWKS, error) {
	addr := g.addr.Load()
	if addr == nil {
		return nil, errors.New("the gateway is down")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+"/jwks.json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := g.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, auth.MaxJWKSSize+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /jwks.json: %s", resp.Status)
	}
	return auth.ParseJWKS(data)
}

// storePath is the gateway's SQLite store.
func (g *gatewayProc) storePath() string { return filepath.Join(g.state, "sandkey.db") }

// openStore opens the store of a stopped gateway, running the thorough
// integrity check at open and the store's own Check.
func (g *gatewayProc) openStore(ctx context.Context) (*store.Store, error) {
	st, err := store.Open(ctx, g.storePath(), store.Options{ThoroughCheck: true})
	if err != nil {
		return nil, err
	}
	if err := st.Check(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

func (g *gatewayProc) sandboxDir(id string) string { return filepath.Join(g.state, "sandboxes", id) }
