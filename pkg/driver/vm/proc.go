package vm

import (
	"os"
	"strconv"
	"strings"

	"github.com/sandkey/sandkey/pkg/driver/hostproc"
)

// processesWithArg lists the live processes one of whose arguments is arg,
// never this one.
func processesWithArg(arg string) []hostproc.Process {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []hostproc.Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(data), "\x00") {
			if a == arg {
				if p, err := hostproc.Identify(pid); err == nil && p.Alive() {
					out = append(out, p)
				}
				break
			}
		}
	}
	return out
}
