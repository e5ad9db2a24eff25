package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/store"
	"github.com/sandkey/sandkey/pkg/testclock"
)

// BenchmarkSweep rotates every sandbox of a gateway at once: the store
// transactions, the signatures and the token directory writes on a tmpfs,
// as in production (the directories exist already, as after the first
// rotation). Sandboxes run in the store only. Beside it,
// BenchmarkMintOnly is the raw signing cost of the same count in the same
// run, on as many cores as the sweep signs on. cpu-ms is the CPU time
// the whole process spent per sweep (user and system, every thread):
// on a machine shared with other work it varies far less than ns/op.
func BenchmarkSweep(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("sandboxes=%d", n), func(b *testing.B) {
			e := newBenchEnv(b, n, onTmpfs)
			e.openBench() // reconcile writes every directory, outside the timing
			var cpu cpuMeter
			for b.Loop() {
				cpu.start()
				e.clock.Add(lifetime) // everything is due again
				rotated, err := e.g.Sweep(context.Background())
				if err != nil || rotated != n {
					b.Fatalf("sweep rotated %d (%v), want %d", rotated, err, n)
				}
				cpu.stop()
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
			cpu.report(b)
		})
	}
}

// BenchmarkRecovery is what users feel after an outage: n sandboxes kept
// running while the gateway was down, long enough for every token to
// expire. It times the gateway's start (Open): every token re-minted and
// written (written-ms), then every sandbox's socket reopened (on the
// socket root's tmpfs, as `gateway serve` mounts it), after
// which each supervisor's next Hello gets its token in Accepted (the
// session benchmarks measure registrations). The token root is empty, as
// after a host reboot. cpu-ms is the CPU time the start took, every core
// together, kernel included: on a shared machine, steadier than its wall
// time.
func BenchmarkRecovery(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("sandboxes=%d", n), func(b *testing.B) {
			var written, cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				e := newBenchEnv(b, n, onDisk)
				e.clock.Add(2 * lifetime) // the gateway was down past every token's life
				// The sandboxes' directories outlived the outage; their
				// sockets are made anew.
				for _, id := range benchTemplate(b, n).ids {
					if err := os.MkdirAll(filepath.Join(e.socketRoot, id), 0o700); err != nil {
						b.Fatal(err)
					}
				}
				began, cpuBefore := time.Now(), processCPU()
				b.StartTimer()
				e.openBench()
				b.StopTimer()
				cpu += processCPU() - cpuBefore
				written += lastPublished(b, e, n).Sub(began)
				e.g.Close()
				e.g = nil
			}
			b.ReportMetric(float64(written.Milliseconds())/float64(b.N), "written-ms")
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms")
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// lastPublished checks that every sandbox's directory holds a token valid
// now, and returns when the last directory was published (the time of
// its ..data link): the point where every token is written, before the
// sockets open.
func lastPublished(b *testing.B, e *env, n int) time.Time {
	all, err := e.g.store.ListSandboxes(context.Background(), store.SandboxRunning)
	if err != nil || len(all) != n {
		b.Fatalf("%d running sandboxes (%v), want %d", len(all), err, n)
	}
	var last time.Time
	for _, sb := range all {
		if _, err := e.dirToken(sb.ID); err != nil {
			b.Fatalf("sandbox %s after recovery: %v", sb.ID, err)
		}
		fi, err := os.Lstat(filepath.Join(e.g.tokenDir(sb.ID), "..data"))
		if err != nil {
			b.Fatal(err)
		}
		if fi.ModTime().After(last) {
			last = fi.ModTime()
		}
	}
	return last
}

// BenchmarkMintOnly signs n tokens and does nothing else: the reference
// of BenchmarkSweep. It signs on the cores the sweep signs on: as many
// goroutines as presign starts (GOMAXPROCS), each taking every
// GOMAXPROCS-th token, so its ns/op is what the sweep's signatures alone
// would take of its wall time. (On one goroutine the reference would be
// up to twice slower than the sweep's own signing, and flatter the
// ratio.) cpu-ms is the CPU time spent per op, as in BenchmarkSweep: the
// ratio of the two cpu-ms is the sweep's cost over signing whatever the
// cores each got.
func BenchmarkMintOnly(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("sandboxes=%d", n), func(b *testing.B) {
			e := newBenchEnv(b, 1, onTmpfs)
			e.openBench()
			workers := min(runtime.GOMAXPROCS(0), n) // as presign
			var cpu cpuMeter
			for b.Loop() {
				cpu.start()
				var wg sync.WaitGroup
				errs := make([]error, workers)
				for w := range workers {
					wg.Go(func() {
						for i := w; i < n; i += workers {
							if _, err := e.g.issuer.Mint("sb", uint64(i+1)); err != nil {
								errs[w] = err
								return
							}
						}
					})
				}
				wg.Wait()
				cpu.stop()
				if err := errors.Join(errs...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
			cpu.report(b)
		})
	}
}

// cpuMeter adds up the CPU time (user and system, all threads) the process
// spends between start and stop, over a benchmark's iterations.
type cpuMeter struct {
	began, total time.Duration
	n            int
}

func (m *cpuMeter) start() { m.began = processCPU() }

func (m *cpuMeter) stop() {
	m.total += processCPU() - m.began
	m.n++
}

// report reports the CPU time per iteration as cpu-ms.
func (m *cpuMeter) report(b *testing.B) {
	if m.n > 0 {
		b.ReportMetric(float64(m.total.Microseconds())/1000/float64(m.n), "cpu-ms")
	}
}

func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchSizes() []int { return []int{100, 1000, 10000} }

// benchDriver is a fake driver: it reports every sandbox running and
// never runs one. The benchmarks measure the gateway's tokens, and 10,000
// real processes would measure the machine instead.
type benchDriver struct{ driver.Driver }

func (benchDriver) Status(context.Context, string) (driver.Status, error) {
	return driver.Status{State: driver.StateRunning}, nil
}

func (benchDriver) TokenDelivery() driver.TokenDelivery { return driver.DeliveryDirBind }

// Where a benchmark's state directory lives.
const (
	// onDisk is the machine's temporary directory, a disk as in
	// production: what a gateway's start costs includes the state
	// directory's file system (the store, and a look for each sandbox's
	// socket directory of an older layout there).
	onDisk = false
	// onTmpfs is /dev/shm, for benchmarks whose timing the state
	// directory does not enter (a sweep commits in the store about twenty
	// times in all): their setup, which opens every sandbox's socket, is
	// then quick.
	onTmpfs = true
)

// newBenchEnv makes a gateway's state with n running sandboxes, each with
// a generation whose token is valid at e.clock, from a template seeded
// once per process, and token and socket roots on a tmpfs (/dev/shm) as
// in production. It opens nothing: call e.openBench.
func newBenchEnv(b *testing.B, n int, tmpfs bool) *env {
	b.Helper()
	tpl := benchTemplate(b, n)
	dir := shortTempDir(b)
	if tmpfs {
		var err error
		if dir, err = os.MkdirTemp("/dev/shm", "sk"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	e := &env{t: b, dir: dir, clock: testclock.New(tpl.now)}
	e.tokenRoot, e.socketRoot = memoryTokenRoot(b), memorySocketRoot(b)
	state := filepath.Join(e.dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		b.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal"} { // a WAL not yet checkpointed holds rows too
		if err := copyFile(tpl.store+suffix, filepath.Join(state, StoreFile+suffix)); err != nil && !os.IsNotExist(err) {
			b.Fatal(err)
		}
	}
	e.drv = &checkingDriver{Driver: benchDriver{}, t: b, g: func() *Gateway { return e.g }}
	b.Cleanup(func() {
		if e.g != nil {
			e.g.Close()
		}
	})
	return e
}

// openBench opens the gateway on the benchmark driver.
func (e *env) openBench() {
	e.t.Helper()
	g, err := Open(context.Background(), e.config())
	if err != nil {
		e.t.Fatal(err)
	}
	e.g = g
}

// template is a store file holding n running sandboxes, each at gen 1
// minted at now.
type template struct {
	store string
	now   time.Time
	ids   []string
}

var (
	templatesMu sync.Mutex
	templates   = map[int]template{}
	templateDir string
)

// benchTemplate seeds the template of n sandboxes on a tmpfs, where the
// store's fsyncs cost nothing, once per process: seeding 10,000 sandboxes
// one transaction each on disk took longer than the benchmarks.
func benchTemplate(b *testing.B, n int) template {
	templatesMu.Lock()
	defer templatesMu.Unlock()
	if tpl, ok := templates[n]; ok {
		return tpl
	}
	if templateDir == "" {
		dir, err := os.MkdirTemp("/dev/shm", "sk-bench")
		if err != nil {
			b.Fatal(err)
		}
		templateDir = dir
	}
	start := time.Now()
	dir := filepath.Join(templateDir, fmt.Sprint(n))
	e := &env{t: b, dir: dir, clock: testclock.New(time.Now().Truncate(time.Second))}
	e.tokenRoot = filepath.Join(dir, "tokens")
	e.drv = &checkingDriver{Driver: benchDriver{}, t: b, g: func() *Gateway { return e.g }}
	g, err := Open(context.Background(), e.config())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	g.Close()
	if err := seedRunning(ctx, filepath.Join(dir, "state", StoreFile), n, e.clock.Now()); err != nil {
		b.Fatal(err)
	}
	// Reopening mints gen 1 of every sandbox (reconcile), as if each had
	// been started.
	if g, err = Open(ctx, e.config()); err != nil {
		b.Fatal(err)
	}
	all, err := g.store.ListSandboxes(ctx)
	g.Close()
	if err != nil {
		b.Fatal(err)
	}
	tpl := template{store: filepath.Join(dir, "state", StoreFile), now: e.clock.Now()}
	for _, sb := range all {
		tpl.ids = append(tpl.ids, sb.ID)
	}
	templates[n] = tpl
	b.Logf("seeded a template of %d sandboxes in %s", n, time.Since(start).Round(time.Millisecond))
	return tpl
}

// seedRunning inserts n running sandboxes into the SQLite store at path in
// one transaction, as the store's own benchmarks seed theirs: 2n store
// transactions (CreateSandbox, then UpdateSandboxState) took most of the
// gateway benchmarks' setup on a loaded machine (56 s for 10,000). The
// rows are what those calls write; the store's schema is the gateway's
// Open's, which made the file.
func seedRunning(ctx context.Context, path string, n int, now time.Time) (err error) {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	insert, err := tx.PrepareContext(ctx, `INSERT INTO sandboxes (id, name, driver, state, spec, instance_id, created_at, updated_at)
		VALUES (?, ?, 'process', 'running', '{"command":["true"]}', 'bench', ?, ?)`)
	if err != nil {
		return err
	}
	defer insert.Close()
	for i := range n {
		if _, err := insert.ExecContext(ctx, randid.New(16), fmt.Sprintf("sb-%d", i), now.UnixNano(), now.UnixNano()); err != nil {
			return fmt.Errorf("seed sandbox %d: %w", i, err)
		}
	}
	return tx.Commit()
}

func removeBenchTemplates() {
	if templateDir != "" {
		os.RemoveAll(templateDir)
	}
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

// memorySocketRoot is a socket root on /dev/shm, a tmpfs, as in
// production where the gateway mounts one.
func memorySocketRoot(b *testing.B) string {
	dir, err := os.MkdirTemp("/dev/shm", "sk-sockets")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// memoryTokenRoot is a token root on /dev/shm, a tmpfs, as in production
// where the gateway mounts one.
func memoryTokenRoot(b *testing.B) string {
	dir, err := os.MkdirTemp("/dev/shm", "sk-tokens")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if err := tokendir.RemoveDir(filepath.Join(dir, e.Name())); err != nil {
				b.Error(err)
			}
		}
		os.Remove(dir)
	})
	return dir
}
