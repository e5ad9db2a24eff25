package replicas

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// serviceStandIn stands in for the Kubernetes Service in front of the
// replicas' shared session listeners (the ClusterIP Service of
// deploy/kubernetes, which kube-proxy balances over the gateway pods):
// this cluster runs no kube-proxy, so the test balances itself. It is a
// plain TCP (layer 4) balancer: TLS passes through it untouched, so the
// supervisors verify the replicas' certificate for the Service's address,
// as they would in a cluster.
//
// Each connection goes to the next replica, round-robin, that accepts it;
// a replica that refuses (killed, not yet listening) is skipped, as an
// endpoint that is not ready is. When either side of a proxied connection
// ends, both do, as kube-proxy's conntrack entry dies with the backend.
type serviceStandIn struct {
	l        net.Listener
	backends []string

	mu    sync.Mutex
	next  int
	conns map[*proxied]struct{}
	// accepted counts the connections each backend took.
	accepted []int

	wg sync.WaitGroup // the accept loop and every proxied connection
}

// proxied is one client connection and the backend connection it goes to.
type proxied struct {
	client, backend net.Conn
	to              int // index into backends
	since           time.Time
}

// dialTimeout bounds a dial to one backend before the next is tried.
const dialTimeout = 2 * time.Second

// newServiceStandIn listens on addr (host:port; port 0 for a free one)
// and balances over backends (host:port each).
func newServiceStandIn(addr string, backends []string) (*serviceStandIn, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &serviceStandIn{l: l, backends: backends, conns: map[*proxied]struct{}{}, accepted: make([]int, len(backends))}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr is where clients connect (the Service's address).
func (s *serviceStandIn) Addr() string { return s.l.Addr().String() }

func (s *serviceStandIn) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.wg.Add(1)
		go s.serve(c)
	}
}

// pick dials the backends round-robin from the next one and returns the
// first that accepts; nil when none does.
func (s *serviceStandIn) pick() (net.Conn, int) {
	s.mu.Lock()
	start := s.next
	s.next = (s.next + 1) % len(s.backends)
	s.mu.Unlock()
	for k := range s.backends {
		i := (start + k) % len(s.backends)
		b, err := net.DialTimeout("tcp", s.backends[i], dialTimeout)
		if err == nil {
			return b, i
		}
	}
	return nil, -1
}

func (s *serviceStandIn) serve(c net.Conn) {
	defer s.wg.Done()
	b, i := s.pick()
	if b == nil {
		c.Close() // no replica accepts: as a Service with no ready endpoint
		return
	}
	p := &proxied{client: c, backend: b, to: i, since: time.Now()}
	s.mu.Lock()
	if s.conns == nil { // closed meanwhile
		s.mu.Unlock()
		c.Close()
		b.Close()
		return
	}
	s.conns[p] = struct{}{}
	s.accepted[i]++
	s.mu.Unlock()
	var both sync.WaitGroup
	both.Add(2)
	pipe := func(dst, src net.Conn) {
		defer both.Done()
		io.Copy(dst, src) //nolint:errcheck // either side ending ends both
		c.Close()
		b.Close()
	}
	go pipe(b, c)
	go pipe(c, b)
	both.Wait()
	s.mu.Lock()
	delete(s.conns, p)
	s.mu.Unlock()
}

// Open returns, per backend, how many proxied connections are open.
func (s *serviceStandIn) Open() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := make([]int, len(s.backends))
	for p := range s.conns {
		n[p.to]++
	}
	return n
}

// Accepted returns, per backend, how many connections it took so far.
func (s *serviceStandIn) Accepted() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.accepted...)
}

// Close stops accepting, ends every proxied connection and waits for
// every goroutine of the stand-in.
func (s *serviceStandIn) Close() error {
	err := s.l.Close()
	s.mu.Lock()
	for p := range s.conns {
		p.client.Close()
		p.backend.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// cut ends every proxied connection to backend i, as a Service's
// endpoint going away would: their clients reconnect, round-robin.
func (s *serviceStandIn) cut(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.conns {
		if p.to == i {
			p.client.Close()
			p.backend.Close()
		}
	}
}
