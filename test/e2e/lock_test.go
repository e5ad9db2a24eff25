package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandkey/sandkey/test/binaries"
)

// TestSecondGatewayOnALiveStateDirExitsAndTouchesNothing: a second
// `gateway serve` on the state directory of a running one exits 2 at once,
// naming the first one's PID, and the first one's sockets keep answering.
func TestSecondGatewayOnALiveStateDirExitsAndTouchesNothing(t *testing.T) {
	dir := binaries.TempDir(t, "sk")
	state := filepath.Join(dir, "state")
	g := startGatewayBinary(t, state)
	var id string
	t.Cleanup(func() {
		if id != "" {
			g.cli("sandbox", "delete", id)
		}
		g.kill()
	})
	if _, err := g.cli("sandbox", "create", "first", "--start", "--", "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	id = g.list()[0].ID
	waitFor(t, 20*time.Second, "the sandbox registered", func() bool { return g.list()[0].Connected },
		func() string { return fmt.Sprintf("%+v", g.list()) })
	sockets := []string{binaries.Socket(state, id), filepath.Join(state, "admin.sock")}
	before := make([]os.FileInfo, len(sockets))
	for i, p := range sockets {
		var err error
		if before[i], err = os.Lstat(p); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	second := exec.CommandContext(ctx, binaries.Gateway, "serve", "--state-dir", state, "--token-lifetime", "10s",
		"--http-addr", "", "--supervisor", binaries.Supervisor)
	second.Stderr = &stderr
	err := second.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("second gateway: %v, want exit code 2; stderr: %s", err, stderr.String())
	}
	if want := fmt.Sprintf("PID %d", g.cmd.Process.Pid); !bytes.Contains(stderr.Bytes(), []byte(want)) {
		t.Fatalf("second gateway's message does not name %s: %s", want, stderr.String())
	}

	for i, p := range sockets {
		fi, err := os.Lstat(p)
		if err != nil || !os.SameFile(before[i], fi) {
			t.Fatalf("%s replaced or removed by the second gateway: %v", p, err)
		}
		c, err := net.Dial("unix", p)
		if err != nil {
			t.Fatalf("%s no longer answers: %v", p, err)
		}
		c.Close()
	}
	if sb := g.list()[0]; !sb.Connected {
		t.Fatalf("the first gateway lost its sandbox's session: %+v", sb)
	}
}
