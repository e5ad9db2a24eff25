package benchreport

import "fmt"

// Module is sandkey's module path; the packages below are under it.
const Module = "github.com/sandkey/sandkey"

// Layout is what a report shows: the headline, the pairs and the growth
// tables. Every result of the run is listed after them regardless.
type Layout struct {
	Headline []Pair
	Pairs    []Pair
	Growth   []Growth
}

// The packages whose benchmarks the report pairs.
const (
	pkgAuth     = Module + "/pkg/auth"
	pkgSource   = Module + "/pkg/auth/source"
	pkgTokenDir = Module + "/pkg/auth/tokendir"
	pkgGateway  = Module + "/pkg/gateway"
	pkgStore    = Module + "/pkg/store"
	pkgSession  = Module + "/pkg/session"
	pkgE2E      = Module + "/test/e2e"
	unitNsPerOp = "ns/op"
)

// Benchmarks of the run that the layout names.
var (
	mint          = Ref{pkgAuth, "BenchmarkMint"}
	rawSign       = Ref{pkgAuth, "BenchmarkRawEd25519Sign"}
	verify        = Ref{pkgAuth, "BenchmarkVerify"}
	rawVerify     = Ref{pkgAuth, "BenchmarkRawEd25519Verify"}
	propFsnotify  = Ref{pkgSource, "BenchmarkPropagation/fsnotify"}
	propPoll      = Ref{pkgSource, "BenchmarkPropagation/poll-100ms"}
	rawInotify    = Ref{pkgSource, "BenchmarkRawInotifyLatency"}
	clientGo      = Ref{pkgSource, "BenchmarkReferenceClientGoCachedFileTokenSource"}
	registration  = Ref{pkgSession, "BenchmarkRegistrationToFreshToken"}
	supervisorIdl = Ref{pkgE2E, "BenchmarkSupervisorIdle"}
	fanout        = Ref{pkgGateway, "BenchmarkFanout"}
	dirWrite      = Ref{pkgTokenDir, "BenchmarkWrite"}
	layoutFloor   = Ref{pkgTokenDir, "BenchmarkLayoutFloor/atomic-writer"}
	plainRename   = Ref{pkgTokenDir, "BenchmarkLayoutFloor/plain-rename"}
)

func sweepAt(n int) string     { return fmt.Sprintf("BenchmarkSweep/sandboxes=%d", n) }
func sweepPGAt(n int) string   { return fmt.Sprintf("BenchmarkSweepPostgres/sandboxes=%d", n) }
func mintOnlyAt(n int) string  { return fmt.Sprintf("BenchmarkMintOnly/sandboxes=%d", n) }
func sessionsAt(n int) string  { return fmt.Sprintf("BenchmarkGatewaySessions/N=%d", n) }
func recoveryAt(n int) string  { return fmt.Sprintf("BenchmarkRecovery/sandboxes=%d", n) }
func storeGensAt(n int) string { return "BenchmarkNextGenerations" + shortCount(n) }

// shortCount names a count as the store's benchmarks do: 100, 1k, 10k.
func shortCount(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// Sandkey is the layout of sandkey's bench/REPORT.md.
func Sandkey() Layout {
	const (
		clientGoNote = "BenchmarkReferenceClientGoCachedFileTokenSource, client-go's NewCachedFileTokenSource reading the same file: " +
			"it re-reads it every 50 s, whatever the write's phase"
		inotifyNote = "BenchmarkRawInotifyLatency, a bare inotify watch on the same directory and a plain read of token: the kernel's floor. " +
			"Both are timed from Writer.Write's return, and both readers usually hold the token before the write's cleanup ends: " +
			"their p50 is below what the clock resolves; read the p99"
		rawNote = "BenchmarkRawEd25519Sign and BenchmarkRawEd25519Verify, crypto/ed25519 alone on the same signing input: the ratio is what the JWT encoding and claims cost over the signature"
	)
	var pairs []Pair
	pairs = append(pairs,
		Pair{Title: "Mint a token", Figure: mint, Reference: rawSign, Units: []string{unitNsPerOp, "allocs/op"}, Note: rawNote},
		Pair{Title: "Verify a token", Figure: verify, Reference: rawVerify, Units: []string{unitNsPerOp, "allocs/op"}, Note: rawNote},
	)
	for _, n := range []int{100, 1000, 10000} {
		pairs = append(pairs, Pair{
			Title:  fmt.Sprintf("Rotation sweep of %s sandboxes", groupThousands(float64(n))),
			Figure: Ref{pkgGateway, sweepAt(n)}, Reference: Ref{pkgGateway, mintOnlyAt(n)}, Units: []string{unitNsPerOp, "cpu-ms"},
			Note: "BenchmarkMintOnly, minting the same count of tokens on the same cores and nothing else: the ratio is what the store transaction and the directory writes add; " +
				"cpu-ms is the CPU time of both cores, steadier than wall time on a shared machine",
		})
	}
	for _, n := range []int{1000, 10000} {
		pairs = append(pairs, Pair{
			Title:  fmt.Sprintf("Rotation sweep of %s sandboxes on Postgres", groupThousands(float64(n))),
			Figure: Ref{pkgGateway, sweepPGAt(n)}, Reference: Ref{pkgGateway, sweepAt(n)}, Units: []string{unitNsPerOp},
			Note: "BenchmarkSweep, the same sweep on the embedded SQLite file: the ratio is what a Postgres server (local, over its unix socket) and the leader's fence cost",
		})
	}
	pairs = append(pairs,
		Pair{Title: "Write one token directory (tmpfs)", Figure: dirWrite, Reference: layoutFloor, Units: []string{unitNsPerOp},
			Note: "BenchmarkLayoutFloor/atomic-writer, the bare system calls of one write of DESIGN.md §4's layout, without lock, listing or check: " +
				"the ratio is what Writer's guarantees cost"},
		Pair{Title: "§4's layout, at its floor, against a plain rename of the token (tmpfs)", Figure: layoutFloor, Reference: plainRename,
			Units: []string{unitNsPerOp}, Note: "BenchmarkLayoutFloor/plain-rename, the token alone replaced by a rename: " +
				"the ratio is what the ..data swap and the generation directories cost, whoever writes them"},
		Pair{Title: "Directory write to the source, fsnotify", Figure: propFsnotify, Reference: rawInotify,
			Units: []string{"p50-µs", "p99-µs"}, Note: inotifyNote},
		Pair{Title: "Directory write to the source, fsnotify, against client-go", Figure: propFsnotify, Reference: clientGo,
			Units: []string{"p50-µs", "p99-µs"}, Note: clientGoNote},
		Pair{Title: "Directory write to the source, 100 ms polling (virtio-fs polls at 1 s), against client-go", Figure: propPoll,
			Reference: clientGo, Units: []string{"p50-µs", "p99-µs"}, Note: clientGoNote},
	)

	headline := []Pair{
		{Title: "Mint a token", Figure: mint, Reference: rawSign, Units: []string{unitNsPerOp}, Note: "raw Ed25519 sign"},
		{Title: "Verify a token", Figure: verify, Reference: rawVerify, Units: []string{unitNsPerOp}, Note: "raw Ed25519 verify"},
		{Title: "Rotate 10,000 sandboxes in one sweep", Figure: Ref{pkgGateway, sweepAt(10000)},
			Reference: Ref{pkgGateway, mintOnlyAt(10000)}, Units: []string{unitNsPerOp, "cpu-ms"}, Note: "minting 10,000 tokens only, on the same cores"},
		{Title: "Rotate 10,000 sandboxes in one sweep, on Postgres", Figure: Ref{pkgGateway, sweepPGAt(10000)},
			Reference: Ref{pkgGateway, sweepAt(10000)}, Units: []string{unitNsPerOp}, Note: "the same sweep on SQLite"},
		{Title: "Replicas: a rotation on one replica reaches the supervisor whose session another holds (p50, p99)", Figure: fanout,
			Units: []string{"fanout-p50-ms", "fanout-p99-ms"}},
		{Title: "New token in the supervisor's source after a write (fsnotify, p99)", Figure: propFsnotify, Reference: rawInotify,
			Units: []string{"p99-µs"}, Note: "raw inotify on the same directory"},
		{Title: "New token in the source after a write (100 ms polling, p50)", Figure: propPoll, Reference: clientGo,
			Units: []string{"p50-µs"}, Note: "client-go cached file token source"},
		{Title: "Registration to fresh token over the socket (p50, p99)", Figure: registration, Units: []string{"p50-ns", "p99-ns"}},
		{Title: "Recovery after an outage: 10,000 sandboxes' expired tokens re-minted and written, sockets reopened",
			Figure: Ref{pkgGateway, recoveryAt(10000)}, Units: []string{unitNsPerOp, "written-ms", "cpu-ms"}},
		{Title: "Push one rotation to 10,000 sessions, all acknowledged", Figure: Ref{pkgSession, sessionsAt(10000)},
			Units: []string{"ns/rotation-to-all"}},
		{Title: "What a connected sandbox costs the gateway, at 10,000 sessions (one connection each)", Figure: Ref{pkgSession, sessionsAt(10000)},
			Units: []string{"gateway-bytes/session", "gateway-heap-bytes/session", "gateway-stack-bytes/session", "gateway-goroutines/session"}},
		{Title: "What its session costs the supervisor's side, at 10,000 sessions", Figure: Ref{pkgSession, sessionsAt(10000)},
			Units: []string{"supervisor-bytes/session"}},
		{Title: "Idle supervisor: anonymous RSS, CPU", Figure: supervisorIdl, Units: []string{"rss-anon-MiB", "cpu-ms/s"}},
	}

	loads := []int{100, 1000, 10000}
	growth := []Growth{
		{
			Title: "Rotation sweep", Load: "sandboxes", Loads: loads,
			Note: "One Sweep rotates every sandbox: one store transaction per batch, the signatures, the directory writes. " +
				"Mint only is the signatures alone; the store's share is NextGenerations with a free mint.",
			Columns: []GrowthColumn{
				{Header: "sweep", Pkg: pkgGateway, Name: sweepAt, Unit: unitNsPerOp},
				{Header: "sweep per sandbox", Pkg: pkgGateway, Name: sweepAt, Unit: unitNsPerOp, PerLoad: true},
				{Header: "mint only per sandbox", Pkg: pkgGateway, Name: mintOnlyAt, Unit: unitNsPerOp, PerLoad: true},
				{Header: "store per sandbox", Pkg: pkgStore, Name: storeGensAt, Unit: unitNsPerOp, PerLoad: true},
				{Header: "sweep tokens/s", Pkg: pkgGateway, Name: sweepAt, Unit: "tokens/s"},
				{Header: "sweep on Postgres", Pkg: pkgGateway, Name: sweepPGAt, Unit: unitNsPerOp},
			},
		},
		{
			Title: "Recovery after an outage", Load: "sandboxes", Loads: loads,
			Note: "The gateway starts after every running sandbox's token expired: reconcile re-mints and writes every token " +
				"(to written), then reopens every sandbox's socket (the whole start).",
			Columns: []GrowthColumn{
				{Header: "start", Pkg: pkgGateway, Name: recoveryAt, Unit: unitNsPerOp},
				{Header: "to written", Pkg: pkgGateway, Name: recoveryAt, Unit: "written-ms"},
				{Header: "start per sandbox", Pkg: pkgGateway, Name: recoveryAt, Unit: unitNsPerOp, PerLoad: true},
			},
		},
		{
			Title: "Sessions on one gateway", Load: "sessions", Loads: loads,
			Note: "N sessions, each on its own connection as in production, the supervisors in a child process; " +
				"one rotation pushed to all of them until every push is acknowledged. Memory is each process's heap and stacks after a GC.",
			Columns: []GrowthColumn{
				{Header: "rotation to all", Pkg: pkgSession, Name: sessionsAt, Unit: "ns/rotation-to-all"},
				{Header: "per session", Pkg: pkgSession, Name: sessionsAt, Unit: "ns/rotation-to-all", PerLoad: true},
				{Header: "gateway per session", Pkg: pkgSession, Name: sessionsAt, Unit: "gateway-bytes/session"},
				{Header: "gateway goroutines per session", Pkg: pkgSession, Name: sessionsAt, Unit: "gateway-goroutines/session"},
				{Header: "supervisor per session", Pkg: pkgSession, Name: sessionsAt, Unit: "supervisor-bytes/session"},
			},
		},
	}
	return Layout{Headline: headline, Pairs: pairs, Growth: growth}
}
