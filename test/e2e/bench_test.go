package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/gateway"
	"github.com/sandkey/sandkey/test/binaries"
)

// idleWindow is how long BenchmarkSupervisorIdle watches an idle
// supervisor's CPU; SANDKEY_BENCH_IDLE overrides it (the issue asks for 60s).
func idleWindow() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("SANDKEY_BENCH_IDLE")); err == nil {
		return d
	}
	return 15 * time.Second
}

// BenchmarkSupervisorIdle reports the supervisor binary's size, its
// resident memory with an open session, and the CPU it uses while idle.
func BenchmarkSupervisorIdle(b *testing.B) {
	h := newBenchHarness(b)
	ctx := context.Background()
	sb, err := h.gw.Create(ctx, gateway.CreateRequest{Name: "idle", Start: true,
		Spec: gateway.Spec{Command: []string{"sleep", "600"}}})
	if err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !h.gw.Sessions().Connected(sb.ID) {
		if time.Now().After(deadline) {
			b.Fatal("supervisor never registered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	pid := supervisorPID(b, h, sb.ID)
	for b.Loop() {
		before := cpuTicks(b, pid)
		time.Sleep(idleWindow())
		b.ReportMetric(float64(cpuTicks(b, pid)-before)*10/idleWindow().Seconds(), "cpu-ms/s")
	}
	fi, _ := os.Stat(binaries.Supervisor)
	b.ReportMetric(float64(fi.Size())/(1<<20), "binary-MiB")
	b.ReportMetric(float64(statusKiB(b, pid, "VmRSS"))/1024, "rss-MiB")
	// Most of the RSS is the binary's clean file pages, shared through the
	// page cache by every sandbox on a host; the anonymous part is what
	// each supervisor costs on its own.
	b.ReportMetric(float64(statusKiB(b, pid, "RssAnon"))/1024, "rss-anon-MiB")
}

func newBenchHarness(b *testing.B) *harness {
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		b.Fatal(err)
	}
	// No benchmark times a delete, which waits out the stop grace.
	h := &harness{t: b, dir: dir, lifet: time.Hour, grace: 100 * time.Millisecond}
	h.start()
	b.Cleanup(func() {
		ctx := context.Background()
		if all, err := h.gw.List(ctx); err == nil {
			for _, sb := range all {
				h.gw.Delete(ctx, sb.ID)
			}
		}
		h.shutdown()
		os.RemoveAll(dir)
	})
	return h
}

func supervisorPID(b testing.TB, h *harness, id string) int {
	data, err := os.ReadFile(filepath.Join(h.dir, "state", "sandboxes", id, "driver", "pid"))
	if err != nil {
		b.Fatal(err)
	}
	var rec struct{ PID int }
	if err := json.Unmarshal(data, &rec); err != nil {
		b.Fatal(err)
	}
	return rec.PID
}

// cpuTicks is utime+stime of pid, in clock ticks (100 per second).
func cpuTicks(b *testing.B, pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// statusKiB reads one kB field of /proc/<pid>/status.
func statusKiB(b *testing.B, pid int, field string) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
