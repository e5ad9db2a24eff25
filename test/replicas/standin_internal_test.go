package replicas

import (
	"bufio"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// echoBackend answers each line with its own name; Close ends its
// listener and every connection it has, as a killed replica's would end.
type echoBackend struct {
	name string
	l    net.Listener
	mu   sync.Mutex
	cs   []net.Conn
	wg   sync.WaitGroup
}

func newEchoBackend(t *testing.T, name string) *echoBackend {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &echoBackend{name: name, l: l}
	b.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.cs = append(b.cs, c)
			b.mu.Unlock()
			b.wg.Go(func() {
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					c.Write([]byte(b.name + "\n"))
				}
			})
		}
	})
	t.Cleanup(b.Close)
	return b
}

func (b *echoBackend) Close() {
	b.l.Close()
	b.mu.Lock()
	for _, c := range b.cs {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// ask sends a line through c and returns the backend's answer.
func ask(t *testing.T, c net.Conn) (string, error) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("who\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, err
}

// The stand-in balances round-robin over the replicas that accept, skips
// one that refuses (killed), and ends a client's connection when its
// replica's end goes.
func TestServiceStandInSkipsReplicasThatRefuseAndEndsTheirConnections(t *testing.T) {
	a, b, dead := newEchoBackend(t, "a"), newEchoBackend(t, "b"), newEchoBackend(t, "dead")
	dead.Close()
	s, err := newServiceStandIn("127.0.0.1:0", []string{a.l.Addr().String(), dead.l.Addr().String(), b.l.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var got []string
	var conns []net.Conn
	for range 6 {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
		ans, err := ask(t, c)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ans[:len(ans)-1])
	}
	na, nb := 0, 0
	for _, g := range got {
		switch g {
		case "a":
			na++
		case "b":
			nb++
		default:
			t.Errorf("answer %q from a replica that refuses connections", g)
		}
	}
	if na < 2 || nb < 2 {
		t.Errorf("answers %v: want both live replicas used, round-robin", got)
	}
	if open := s.Open(); open[1] != 0 || open[0]+open[2] != 6 {
		t.Errorf("open connections per backend %v", open)
	}

	// Replica a dies: its clients' connections end, b's go on.
	a.Close()
	for i, c := range conns {
		_, err := ask(t, c)
		if ended := err != nil; ended != (got[i] == "a") {
			t.Errorf("connection %d (to %s) after a's death: %v", i, got[i], err)
		}
	}
	if acc := s.Accepted(); !slices.Equal(acc, []int{na, 0, nb}) {
		t.Errorf("accepted per backend %v, want [%d 0 %d]", acc, na, nb)
	}
}
