package session

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// BenchmarkGatewaySessions holds N sessions on one gateway (over its shared
// TCP listener) and measures the memory each costs and the time to push
// one rotation to all of them and have it acknowledged. N is 100 and 1000;
// SANDKEY_BENCH_LARGE=1 adds 10,000. Memory is the heap and stacks of both
// ends of each session, as they live in this one process.
func BenchmarkGatewaySessions(b *testing.B) {
	sizes := []int{100, 1000}
	if os.Getenv("SANDKEY_BENCH_LARGE") == "1" {
		sizes = append(sizes, 10000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchSessions(b, n) })
	}
}

func benchSessions(b *testing.B, n int) {
	e := newEnv(b, envConfig{heartbeat: 10 * time.Second, helloTimeout: time.Minute})
	const conns = 8
	rpcs := make([]sessionpb.SupervisorSessionClient, conns)
	for i := range rpcs {
		rpcs[i] = dialRaw(b, e.tcpTarget())
	}
	toks := make([]*auth.Token, n)
	for i := range toks {
		toks[i] = e.mint(fmt.Sprintf("sb-%05d", i))
	}

	heapBefore, rssBefore := memoryInUse()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var acked atomic.Int64
	defer func() { cancel(); wg.Wait() }()
	sem := make(chan struct{}, 64)
	var failed atomic.Value
	for i, tok := range toks {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream, err := rpcs[i%conns].Connect(callContext(ctx, tok.Raw(), ""))
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
				failed.Store(fmt.Sprintf("session %d: %v %v", i, m, err))
				return
			}
			benchSupervisor(stream, &acked)
		}()
	}
	deadline := time.Now().Add(2 * time.Minute)
	for e.srv.Sessions() < n {
		if f := failed.Load(); f != nil {
			b.Fatal(f)
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d sessions established", e.srv.Sessions(), n)
		}
		time.Sleep(time.Millisecond)
	}
	heapAfter, rssAfter := memoryInUse()

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for _, tok := range toks {
			e.mint(tok.SandboxID())
		}
		acked.Store(0)
		b.StartTimer()
		for _, tok := range toks {
			e.srv.Push(tok.SandboxID())
		}
		for acked.Load() < int64(n) {
			time.Sleep(50 * time.Microsecond)
		}
	}
	b.StopTimer()
	// After the loop: ResetTimer drops metrics reported before it.
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/rotation-to-all")
	b.ReportMetric(float64(heapAfter-heapBefore)/float64(n), "heap-bytes/session")
	b.ReportMetric(float64(rssAfter-rssBefore)/float64(n), "rss-bytes/session")
}

// benchSupervisor answers heartbeats and acknowledges pushes.
func benchSupervisor(stream sessionpb.SupervisorSession_ConnectClient, acked *atomic.Int64) {
	for {
		m, err := stream.Recv()
		if err != nil {
			return
		}
		var reply *sessionpb.SupervisorMessage
		switch msg := m.GetMsg().(type) {
		case *sessionpb.GatewayMessage_Heartbeat:
			reply = &sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_Heartbeat{Heartbeat: &sessionpb.Heartbeat{}}}
		case *sessionpb.GatewayMessage_TokenUpdate:
			reply = &sessionpb.SupervisorMessage{Msg: &sessionpb.SupervisorMessage_TokenAck{TokenAck: &sessionpb.TokenAck{Gen: msg.TokenUpdate.GetGen()}}}
			acked.Add(1)
		default:
			continue
		}
		if err := stream.Send(reply); err != nil {
			return
		}
	}
}

// memoryInUse returns heap+stack bytes in use after a GC, and the
// process's resident set size.
func memoryInUse() (heap, rss int64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap = int64(ms.HeapInuse + ms.StackInuse)
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			rss = pages * int64(os.Getpagesize())
		}
	}
	return heap, rss
}
