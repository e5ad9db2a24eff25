package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/testmain"
	"github.com/sandkey/sandkey/test/binaries"
)

// The gateway's memory holds every sandbox's newest token and the signing
// keys. It makes itself not dumpable: no core dump writes them to a disk,
// and no other process of its user (a process sandbox's among them) may
// trace it or read /proc/<pid>/mem. The kernel shows it: the files of
// /proc/<pid> of a process that is not dumpable belong to root, whoever
// runs it.
func TestGatewayMemoryIsNeitherDumpedNorReadableByItsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		testmain.SkipIfMissing(t, errors.New("this test runs the gateway as another user, which needs root"), true)
	}
	const nobody = 65534
	dir := binaries.TempDir(t, "sk")
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "gateway")
	data, err := os.ReadFile(binaries.Gateway)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "--state-dir", state, "--http-addr", "", "--supervisor", "/usr/bin/env")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	proc := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid))
	log := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	// The operator socket is served once Open returned, long after the
	// gateway made itself not dumpable.
	waitFor(t, 20*time.Second, "the gateway serves its operator socket", func() bool {
		_, err := os.Stat(filepath.Join(state, "admin.sock"))
		return err == nil
	}, log)

	status, err := os.ReadFile(filepath.Join(proc, "status"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "Uid:\t" + strconv.Itoa(nobody); !strings.Contains(string(status), want) {
		t.Fatalf("the gateway does not run as %d:\n%s", nobody, status)
	}
	mem := filepath.Join(proc, "mem")
	fi, err := os.Stat(mem)
	if err != nil {
		t.Fatal(err)
	}
	if owner := fi.Sys().(*syscall.Stat_t).Uid; owner != 0 {
		t.Errorf("%s belongs to uid %d, the gateway's user: the gateway is dumpable, its memory readable to that user", mem, owner)
	}
}
