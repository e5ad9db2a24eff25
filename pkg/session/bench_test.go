package session

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// BenchmarkRegistrationToFreshToken measures, over a unix socket, the time
// from a supervisor starting its session to the token minted while it was
// away being in its source: Connect, Hello, Accepted, verification.
func BenchmarkRegistrationToFreshToken(b *testing.B) {
	e := newEnv(b, envConfig{heartbeat: 10 * time.Second})
	target, tok := e.sandbox("sb-bench")
	src := e.newSource("sb-bench", tok)
	changed, unsubscribe := src.Subscribe()
	defer unsubscribe()
	c := e.startClient(ClientConfig{Target: target, SandboxID: "sb-bench", Source: src})
	c.stop()
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want := e.mint("sb-bench").Gen()
		start := time.Now()
		c.start()
		for tok := range changed {
			if tok.Gen() == want {
				break
			}
		}
		latencies = append(latencies, time.Since(start))
		b.StopTimer()
		c.stop()
		b.StartTimer()
	}
	b.StopTimer()
	reportPercentiles(b, latencies)
}

func reportPercentiles(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	pct := func(p float64) float64 { return float64(d[min(len(d)-1, int(p*float64(len(d))))].Nanoseconds()) }
	b.ReportMetric(pct(0.50), "p50-ns")
	b.ReportMetric(pct(0.99), "p99-ns")
}

// BenchmarkGatewaySessions holds N sessions on one gateway, each on a
// connection of its own as in production (every supervisor dials its own
// socket), and reports what a connected sandbox costs each side and the
// time to push one rotation to all of them and have it acknowledged
// (ns/rotation-to-all), so that a saving in memory is seen beside what it
// costs the push. The supervisors run in a child process (this test
// binary, see TestHelperSupervisors), so each side's memory is its own
// process's: heap in use plus goroutine stacks after a GC (both, and each
// apart: stacks are most of it), per session, measured once every session
// is accepted and again after the pushes (which then also counts the
// test authority's second token of each sandbox, some 0.7 KiB, and
// gRPC's pooled write buffers that recent writes left).
//
// N=... connect over the gateway's shared TCP listener: 10,000 per-sandbox
// sockets and their connections would need more than the 20,000 file
// descriptors a process may hold on the benchmark machine. sockets/N=1000
// connects over per-sandbox sockets, as containers and VMs do, and also
// reports what the sockets themselves cost before anyone connects. N is
// 100 and 1000; SANDKEY_BENCH_LARGE=1 adds 10,000.
//
// Measured on 2 shared (busy) cores, before and after the gateway's
// session loop stopped keeping goroutines of its own (two runs each):
//
//	                               before          after
//	N=10000 (TCP)  gateway         47.4-48.8 KiB   36.3-36.6 KiB per session
//	               heap / stacks   21-23 / 26 KiB  17.7 / 18.7-18.9 KiB
//	               after pushes    52.3-52.5 KiB   39.9-40.1 KiB
//	               goroutines      6               4 (gRPC's own)
//	               push to all     1.64-1.95 s     1.30-1.63 s
//	sockets/N=1000 gateway         78.6-78.9 KiB   32.9-33.7 KiB per session
//	               the socket      8.3-8.5 KiB     4.3-4.8 KiB per sandbox
//
// What is left is gRPC's: its four goroutines' stacks (the handler's
// 8 KiB, which reading the stream needs; the transport reader's 4; the
// writer's 4; keepalive's 2 or 4) and about 13 KiB of transport heap.
func BenchmarkGatewaySessions(b *testing.B) {
	sizes := []int{100, 1000}
	if os.Getenv("SANDKEY_BENCH_LARGE") == "1" {
		sizes = append(sizes, 10000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchSessions(b, n, false) })
	}
	b.Run("sockets/N=1000", func(b *testing.B) { benchSessions(b, 1000, true) })
}

func benchSessions(b *testing.B, n int, sockets bool) {
	// A logger as the gateway's, JSON at info: what a session keeps for
	// its logs is part of its cost.
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))
	e := newEnv(b, envConfig{heartbeat: 10 * time.Second, helloTimeout: time.Minute, logger: logger})
	toks := make([]*auth.Token, n)
	for i := range toks {
		toks[i] = e.mint(fmt.Sprintf("sb-%05d", i))
	}
	targets := make([]string, n)
	memStart, goroutinesStart := memoryNow(), runtime.NumGoroutine()
	for i, tok := range toks {
		targets[i] = e.tcpTarget()
		if sockets {
			id := tok.SandboxID()
			path, err := e.listeners.AddSandbox(filepath.Join(e.dir, id), id)
			if err != nil {
				b.Fatal(err)
			}
			targets[i] = "unix://" + path
		}
	}
	var list strings.Builder
	for i, tok := range toks {
		list.WriteString(targets[i] + " " + tok.Raw() + "\n")
	}
	memBefore, goroutinesBefore := memoryNow(), runtime.NumGoroutine()

	sup := startSupervisors(b, list.String())
	supervisorBytes := sup.expect("ready")
	deadline := time.Now().Add(2 * time.Minute)
	for e.srv.Sessions() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d sessions established", e.srv.Sessions(), n)
		}
		time.Sleep(time.Millisecond)
	}
	memAccepted, goroutines := memoryNow(), runtime.NumGoroutine()-goroutinesBefore

	// One call per count: b.Loop, unlike a loop over b.N, never calls the
	// function again with a larger N, which would dial every session anew.
	rounds := int64(0)
	for b.Loop() {
		b.StopTimer()
		for _, tok := range toks {
			e.mint(tok.SandboxID())
		}
		rounds++
		b.StartTimer()
		for _, tok := range toks {
			e.srv.Push(tok.SandboxID())
		}
		if got := sup.expect("acked"); got != rounds*int64(n) {
			b.Fatalf("supervisors acknowledged %d pushes, want %d", got, rounds*int64(n))
		}
	}
	memPushed := memoryNow()
	perSession := func(v int64) float64 { return float64(v) / float64(n) }
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/rotation-to-all")
	b.ReportMetric(perSession(memAccepted.total()-memBefore.total()), "gateway-bytes/session")
	b.ReportMetric(perSession(memAccepted.heap-memBefore.heap), "gateway-heap-bytes/session")
	b.ReportMetric(perSession(memAccepted.stack-memBefore.stack), "gateway-stack-bytes/session")
	b.ReportMetric(perSession(memPushed.total()-memBefore.total()), "gateway-bytes/session-after-push")
	b.ReportMetric(perSession(int64(goroutines)), "gateway-goroutines/session")
	b.ReportMetric(perSession(supervisorBytes), "supervisor-bytes/session")
	if sockets {
		b.ReportMetric(perSession(memBefore.total()-memStart.total()), "gateway-socket-bytes/sandbox")
		b.ReportMetric(perSession(int64(goroutinesBefore-goroutinesStart)), "gateway-socket-goroutines/sandbox")
	}
}

// supervisors is the child process holding the supervisors' sessions.
type supervisors struct {
	t   testing.TB
	out *bufio.Scanner
}

// startSupervisors runs TestHelperSupervisors in a child process: one
// session per line of list, "<target> <token>", each on its own
// connection. The child is killed when the benchmark ends.
func startSupervisors(t testing.TB, list string) *supervisors {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSupervisors$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SANDKEY_BENCH_SUPERVISORS=1")
	cmd.Stdin = strings.NewReader(list)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return &supervisors{t: t, out: bufio.NewScanner(stdout)}
}

// expect reads the child's next line, "<word> <number>", and returns the
// number.
func (s *supervisors) expect(word string) int64 {
	s.t.Helper()
	if !s.out.Scan() {
		s.t.Fatalf("supervisors ended before %q: %v", word, s.out.Err())
	}
	got, value, _ := strings.Cut(s.out.Text(), " ")
	v, err := strconv.ParseInt(value, 10, 64)
	if got != word || err != nil {
		s.t.Fatalf("supervisors said %q, want %q and a number", s.out.Text(), word)
	}
	return v
}

// TestHelperSupervisors is the child process of BenchmarkGatewaySessions
// (it does nothing in a plain test run). It opens a session per line read
// from stdin, "<target> <token>", each on its own connection, says "ready <bytes>" with the
// memory they take once every one is accepted, then answers heartbeats
// and acknowledges pushes, saying "acked <total>" each time every session
// acknowledged one more push.
func TestHelperSupervisors(t *testing.T) {
	if os.Getenv("SANDKEY_BENCH_SUPERVISORS") == "" {
		return
	}
	var targets, raws []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		target, raw, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			t.Fatalf("supervisors: line %q is not \"<target> <token>\"", sc.Text())
		}
		targets, raws = append(targets, target), append(raws, raw)
	}
	n := len(raws)
	before := memoryInUse()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	var accepted, acked atomic.Int64
	var out sync.Mutex
	say := func(word string, v int64) {
		out.Lock()
		fmt.Printf("%s %d\n", word, v)
		out.Unlock()
	}
	sem := make(chan struct{}, 64)
	for i, raw := range raws {
		sem <- struct{}{}
		wg.Go(func() {
			conn, err := Dial(ctx, targets[i])
			if err != nil {
				t.Errorf("session %d: %v", i, err)
				<-sem
				return
			}
			defer conn.Close()
			tok, err := auth.ParseUnverified(raw)
			if err != nil {
				t.Errorf("session %d: %v", i, err)
				<-sem
				return
			}
			stream, err := sessionpb.NewSupervisorSessionClient(conn).Connect(callContext(ctx, raw, ""))
			if err == nil {
				err = stream.Send(&sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Hello{Hello: &sessionpb.Hello{
					SandboxId: tok.SandboxID(), TokenGen: tok.Gen()}}})
			}
			var m *sessionpb.GatewayMessage
			if err == nil {
				m, err = stream.Recv()
			}
			<-sem
			if err != nil || m.GetAccepted() == nil {
				t.Errorf("session %d: %v %v", i, m, err)
				return
			}
			accepted.Add(1)
			benchSupervisor(stream, func() {
				if a := acked.Add(1); a%int64(n) == 0 {
					say("acked", a)
				}
			})
		})
	}
	for accepted.Load() < int64(n) && !t.Failed() {
		time.Sleep(time.Millisecond)
	}
	say("ready", memoryInUse()-before)
	<-ctx.Done() // until the benchmark kills the process
}

// benchSupervisor answers heartbeats and acknowledges pushes.
func benchSupervisor(stream sessionpb.SupervisorSession_ConnectClient, onAck func()) {
	for {
		m, err := stream.Recv()
		if err != nil {
			return
		}
		var reply *sessionpb.SupervisorMessage
		ack := false
		switch msg := m.GetMsg().(type) {
		case *sessionpb.GatewayMessage_Heartbeat:
			reply = &sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Heartbeat{Heartbeat: &sessionpb.Heartbeat{}}}
		case *sessionpb.GatewayMessage_TokenUpdate:
			reply = &sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_TokenAck{TokenAck: &sessionpb.TokenAck{Gen: msg.TokenUpdate.GetGen()}}}
			ack = true
		default:
			continue
		}
		if err := stream.Send(reply); err != nil {
			return
		}
		if ack {
			onAck()
		}
	}
}

// memory is what a process holds for its objects and goroutines.
type memory struct{ heap, stack int64 }

func (m memory) total() int64 { return m.heap + m.stack }

// memoryInUse returns the heap and goroutine stack bytes in use after a GC.
func memoryInUse() int64 { return memoryNow().total() }

// memoryNow returns the heap spans and goroutine stacks in use after a GC.
func memoryNow() memory {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memory{heap: int64(ms.HeapInuse), stack: int64(ms.StackInuse)}
}
