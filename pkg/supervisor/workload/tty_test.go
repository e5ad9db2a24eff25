package workload

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestTerminalStdinPutsWorkloadInForeground(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	tty, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()

	// The supervisor leads a session whose controlling terminal is its stdin.
	cmd := helperCommand("tty")
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper: %v; output:\n%s", err, out.String())
	}
	// Output: "<pgrp> <tpgid>" from the workload, then "workload=<pid>".
	fields := strings.Fields(out.String())
	if len(fields) != 3 {
		t.Fatalf("output %q", out.String())
	}
	want := strings.TrimPrefix(fields[2], "workload=")
	if fields[0] != want || fields[1] != want {
		t.Fatalf("workload pgrp %s, terminal foreground group %s, want both %s (the workload's own group)", fields[0], fields[1], want)
	}
}

// helperTTY is the supervisor side of TestTerminalStdinPutsWorkloadInForeground.
func helperTTY() int {
	r, err := Start(context.Background(), Config{
		Argv:   []string{"/bin/sh", "-c", `read -r pid comm state ppid pgrp sid tty tpgid rest </proc/self/stat; echo "$pgrp $tpgid"`},
		Stdin:  os.Stdin,
		Stdout: os.Stdout, Stderr: os.Stderr,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 91
	}
	defer r.Close()
	e := r.Wait()
	fmt.Printf("workload=%d\n", r.Pid())
	return e.Code
}
