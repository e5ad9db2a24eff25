package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sandkey/sandkey/pkg/driver"
)

// deliveryDriver is a fake driver that only declares its token delivery:
// the check asks nothing else of it.
type deliveryDriver struct {
	driver.Driver
	delivery driver.TokenDelivery
}

func (d deliveryDriver) TokenDelivery() driver.TokenDelivery { return d.delivery }

// limitsDir writes a stand-in for /proc/sys/fs/inotify.
func limitsDir(t *testing.T, dir string, instances, watches int) string {
	t.Helper()
	for name, v := range map[string]int{"max_user_instances": instances, "max_user_watches": watches} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("%d\n", v)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func warnings(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
		out = append(out, e.Message)
	}
	return out
}

func TestInotifyCheckWarnsOnceEachTimeHostSandboxesOutgrowTheLimit(t *testing.T) {
	dir := limitsDir(t, t.TempDir(), 128, 8192)
	core, logs := observer.New(zapcore.InfoLevel)
	reg := prometheus.NewRegistry()
	c := newInotifyCheck(dir, zap.New(core), reg)
	host := deliveryDriver{delivery: driver.DeliveryDirBind}
	vm := deliveryDriver{delivery: driver.DeliveryDirVirtiofs}

	c.reset(nil)
	for i := range 112 { // 112 + the reserve of 16 = 128: still enough
		c.started(fmt.Sprintf("sb%d", i), host)
	}
	for i := range 50 { // VM guests have kernels of their own
		c.started(fmt.Sprintf("vm%d", i), vm)
	}
	if w := warnings(logs); len(w) != 0 {
		t.Fatalf("warned with enough instances: %v", w)
	}
	for i := 112; i < 300; i++ {
		c.started(fmt.Sprintf("sb%d", i), host)
	}
	w := warnings(logs)
	if len(w) != 1 {
		t.Fatalf("warnings = %d (%v), want one for the crossing", len(w), w)
	}
	if !strings.Contains(w[0], "sysctl -w fs.inotify.max_user_instances=1024") || strings.Contains(w[0], "max_user_watches=") {
		t.Fatalf("warning %q does not give the one sysctl to run", w[0])
	}
	gauges := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		gauges[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	want := map[string]float64{"sandkey_inotify_max_user_instances": 128, "sandkey_inotify_max_user_watches": 8192, "sandkey_host_kernel_sandboxes": 300}
	for name, v := range want {
		if gauges[name] != v {
			t.Errorf("%s = %v, want %v", name, gauges[name], v)
		}
	}

	// The operator raises the limit: the next start sees it and says so.
	limitsDir(t, dir, 1024, 8192)
	c.started("sb300", host)
	if logs.FilterMessageSnippet("enough for its sandboxes again").Len() != 1 {
		t.Fatal("no word that the limits are enough again")
	}
	// Lowered again: a second crossing, a second warning.
	limitsDir(t, dir, 128, 8192)
	c.started("sb301", host)
	if w := warnings(logs); len(w) != 2 {
		t.Fatalf("warnings = %d after a second crossing, want 2", len(w))
	}
	// Sandboxes ending bring the count down.
	for i := range 302 {
		c.ended(fmt.Sprintf("sb%d", i))
	}
	if n := len(logs.FilterMessageSnippet("enough for its sandboxes again").All()); n != 2 {
		t.Fatalf("'enough again' said %d times, want 2", n)
	}
}

func TestInotifyCheckAsksForWatchesWhenThoseRunShort(t *testing.T) {
	dir := limitsDir(t, t.TempDir(), 100000, 100)
	core, logs := observer.New(zapcore.InfoLevel)
	c := newInotifyCheck(dir, zap.New(core), nil)
	ids := make([]string, 60)
	for i := range ids {
		ids[i] = fmt.Sprint(i)
	}
	c.reset(ids) // 60 sandboxes need 136 watches
	w := warnings(logs)
	if len(w) != 1 || !strings.Contains(w[0], "sysctl -w fs.inotify.max_user_watches=65536") || strings.Contains(w[0], "max_user_instances=") {
		t.Fatalf("warnings %v, want one asking for watches only", w)
	}
}

func TestInotifyCheckWithoutLimitsToReadSaysSoOnce(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	c := newInotifyCheck(filepath.Join(t.TempDir(), "missing"), zap.New(core), nil)
	c.reset([]string{"a"})
	c.started("b", deliveryDriver{delivery: driver.DeliveryDirBind})
	if n := len(logs.FilterMessageSnippet("cannot read the host's inotify limits").All()); n != 1 {
		t.Fatalf("said %d times that the limits cannot be read, want once", n)
	}
	if len(warnings(logs)) != 0 {
		t.Fatal("warned without limits to compare with")
	}
}

func TestTheHostsInotifyLimitsAreRead(t *testing.T) {
	limits, err := readInotifyLimits(inotifyDir)
	if err != nil {
		t.Fatal(err)
	}
	if limits.instances <= 0 || limits.watches <= 0 {
		t.Fatalf("limits %+v, want both positive", limits)
	}
}

func TestSuggestedLimitsLeaveRoomToGrow(t *testing.T) {
	for _, tc := range []struct{ need, floor, want int64 }{
		{316, 1024, 1024}, {600, 1024, 2048}, {1024, 1024, 2048}, {136, 65536, 65536}, {40016, 65536, 131072},
	} {
		if got := suggestLimit(tc.need, tc.floor); got != tc.want {
			t.Errorf("suggestLimit(%d, %d) = %d, want %d", tc.need, tc.floor, got, tc.want)
		}
	}
}
