package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
)

// The test binary doubles as the programs these tests need around the
// driver; roleEnv selects which one it plays. The name does not start with
// SANDKEY_, so the driver passes it through to the supervisor.
const (
	roleEnv   = "PROCESSDRIVER_TEST_ROLE" // supervisor | gateway | init
	reportEnv = "PROCESSDRIVER_TEST_REPORT"
)

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "supervisor":
		os.Exit(standInSupervisor(os.Args[1:]))
	case "gateway":
		os.Exit(standInGateway(os.Args[1:]))
	case "init":
		os.Exit(standInInit(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// standInReport is what the stand-in supervisor reports of itself.
type standInReport struct {
	Args    []string `json:"args"`
	Env     []string `json:"env"`
	PID     int      `json:"pid"`
	Session int      `json:"session"`
	Dir     string   `json:"dir"`
}

// standInSupervisor stands in for cmd/supervisor until the end-to-end tests
// use the real one. Run as `<test binary> -- <mode> [args]`, the way the
// driver runs the supervisor, it writes a standInReport to $reportEnv,
// prints a line to stdout and one to stderr, then by mode:
//
//	serve        exits 0 on SIGTERM
//	ignore-term  ignores SIGTERM; only SIGKILL ends it
//	exit <code>  exits with code at once
//	spawn        starts a grandchild in mode ignore-term, in a process
//	             group of its own as the real supervisor runs its
//	             workload, reporting to $reportEnv.grandchild; then serves
func standInSupervisor(args []string) int {
	if len(args) < 2 || args[0] != "--" {
		fmt.Fprintf(os.Stderr, "stand-in supervisor: usage: -- <mode> [args], got %q\n", args)
		return 2
	}
	mode := args[1]
	term := make(chan os.Signal, 1)
	switch mode {
	case "serve", "spawn":
		signal.Notify(term, syscall.SIGTERM)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
	}
	if mode == "spawn" {
		grandchild := exec.Command(os.Args[0], "--", "ignore-term")
		grandchild.Env = append(os.Environ(), reportEnv+"="+os.Getenv(reportEnv)+".grandchild")
		grandchild.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := grandchild.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "stand-in supervisor: %v\n", err)
			return 1
		}
	}
	if err := writeStandInReport(args); err != nil {
		fmt.Fprintf(os.Stderr, "stand-in supervisor: %v\n", err)
		return 1
	}
	fmt.Printf("stand-in supervisor %d: %s\n", os.Getpid(), mode)
	fmt.Fprintf(os.Stderr, "stand-in supervisor %d: stderr\n", os.Getpid())
	switch mode {
	case "serve", "spawn":
		<-term
		return 0
	case "ignore-term":
		time.Sleep(time.Hour)
		return 1
	case "exit":
		if len(args) < 3 {
			return 2
		}
		code, _ := strconv.Atoi(args[2])
		return code
	}
	fmt.Fprintf(os.Stderr, "stand-in supervisor: unknown mode %q\n", mode)
	return 2
}

func writeStandInReport(args []string) error {
	sid, err := unix.Getsid(0)
	if err != nil {
		return err
	}
	dir, err := os.Getwd()
	if err != nil {
		return err
	}
	r := standInReport{Args: args, Env: os.Environ(), PID: os.Getpid(), Session: sid, Dir: dir}
	path := os.Getenv(reportEnv)
	if path == "" {
		return errors.New("no " + reportEnv)
	}
	return statedir.WriteJSON(path, r) // atomic, so the test never reads half a report
}

// standInGateway plays a gateway that starts a sandbox and dies. Run as
// `<test binary> <state root> <spec file>`, it opens a Driver on the state
// root, creates and starts the spec, closes the Driver and exits, leaving
// the sandbox running.
func standInGateway(args []string) int {
	if err := runStandInGateway(args); err != nil {
		fmt.Fprintf(os.Stderr, "stand-in gateway: %v\n", err)
		return 1
	}
	return 0
}

func runStandInGateway(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: <state root> <spec file>, got %q", args)
	}
	var spec driver.Spec
	if err := statedir.ReadJSON(args[1], &spec); err != nil {
		return err
	}
	d, err := New(Config{SupervisorPath: os.Args[0], StateRoot: args[0]})
	if err != nil {
		return err
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Create(ctx, spec); err != nil {
		return err
	}
	return d.Start(ctx, spec)
}

// standInInit plays the host's init for a stand-in gateway, which it runs
// with args: a child subreaper, it inherits the sandbox the gateway leaves
// behind, so that the sandbox is no child of the test process. It prints
// "ready" once the gateway has exited, reaps the orphans, and exits when
// none is left.
func standInInit(args []string) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "stand-in init: %v\n", err)
		return 1
	}
	gateway := exec.Command(os.Args[0], args...)
	gateway.Env = append(os.Environ(), roleEnv+"=gateway")
	gateway.Stdout, gateway.Stderr = os.Stderr, os.Stderr
	if err := gateway.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "stand-in init: gateway: %v\n", err)
		return 1
	}
	fmt.Println("ready")
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.ECHILD):
			return 0
		case err != nil:
			fmt.Fprintf(os.Stderr, "stand-in init: %v\n", err)
			return 1
		}
	}
}

// testBinary is the path of this test binary, which plays the supervisor.
func testBinary(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// absent reports whether path does not exist.
func absent(path string) bool {
	_, err := os.Lstat(path)
	return errors.Is(err, os.ErrNotExist)
}
