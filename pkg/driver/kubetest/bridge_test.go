package kubetest

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sandkey/sandkey/pkg/driver/enginetest"
)

// dialerPackage is the bridge test's workload.
const dialerPackage = "github.com/sandkey/sandkey/pkg/driver/kubetest/testdata/dialer"

// TestBridgeKeepsItsAddressWhenAPodGoes runs two pods that keep
// connecting to a listener on HostIP, deletes the one whose veth holds
// the bridge's address if one does (the first otherwise), and checks that
// the bridge kept its fixed address and that the other pod still reaches
// the host at once: a bridge that took the lowest address of its ports
// changed it then, and the other pod's ARP entry for the gateway pointed
// at nothing for about a minute.
func TestBridgeKeepsItsAddressWhenAPodGoes(t *testing.T) {
	c := Start(t, Options{Kubelet: true})
	layer := t.TempDir()
	if err := enginetest.BuildStatic(dialerPackage, filepath.Join(layer, "dialer")); err != nil {
		t.Fatal(err)
	}
	const image = "sandkey.local/kubetest-dialer:1"
	c.ImportImage(t, image, layer, []string{"/dialer"})

	l, err := net.Listen("tcp", net.JoinHostPort(c.HostIP(), "0"))
	if err != nil {
		t.Fatalf("listen on HostIP: %v", err)
	}
	seen := newDialLog()
	done := make(chan struct{})
	go func() {
		defer close(done)
		seen.accept(l)
	}()
	defer func() { l.Close(); <-done }()

	const ns = "bridge"
	c.Namespace(t, ns)
	pods := []string{"a", "b"}
	for _, name := range pods {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{
				AutomountServiceAccountToken:  ptr(false),
				TerminationGracePeriodSeconds: ptr(int64(1)),
				Containers: []corev1.Container{{
					Name: "dialer", Image: image, ImagePullPolicy: corev1.PullNever,
					Env: []corev1.EnvVar{{Name: "POD_NAME", Value: name}, {Name: "REPORT_ADDR", Value: l.Addr().String()}},
				}},
			},
		}
		if _, err := c.Client().CoreV1().Pods(ns).Create(ctxT(t), pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s: %v", name, err)
		}
	}
	for _, name := range pods {
		c.WaitPodReady(t, ns, name)
		if !seen.waitSince(name, time.Time{}, 30*time.Second) {
			t.Fatalf("pod %s never reached %s", name, l.Addr())
		}
	}

	bridge := c.node.net.name
	before := linkAddress(t, bridge)
	if want := bridgeMAC(c.node.net.slot); before != want {
		t.Errorf("bridge %s has address %s, want the fixed %s", bridge, before, want)
	}
	victim, survivor := pods[0], pods[1]
	for i, name := range pods {
		if vethAddress(t, bridge, seen.iflink(name)) == before {
			victim, survivor = name, pods[1-i]
		}
	}
	port := vethName(t, bridge, seen.iflink(victim))
	if err := c.Client().CoreV1().Pods(ns).Delete(ctxT(t), victim, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatalf("delete pod %s: %v", victim, err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(filepath.Join("/sys/class/net", bridge, "brif", port)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("veth %s of deleted pod %s still on %s after a minute", port, victim, bridge)
		}
		time.Sleep(100 * time.Millisecond)
	}
	gone := time.Now()
	if after := linkAddress(t, bridge); after != before {
		t.Errorf("bridge %s changed its address from %s to %s when pod %s left", bridge, before, after, victim)
	}
	if !seen.waitSince(survivor, gone, 5*time.Second) {
		t.Errorf("pod %s did not reach %s within 5 s of pod %s's veth leaving the bridge", survivor, l.Addr(), victim)
	} else {
		t.Logf("pod %s reached the host %s after pod %s's veth left", survivor, time.Since(gone).Round(time.Millisecond), victim)
	}
}

// dialLog records, per pod, the last time it connected and the iflink it
// reported.
type dialLog struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every record
	last    map[string]time.Time
	iflinks map[string]string
}

func newDialLog() *dialLog {
	return &dialLog{changed: make(chan struct{}), last: map[string]time.Time{}, iflinks: map[string]string{}}
}

// accept records the lines of l's connections until l is closed.
func (d *dialLog) accept(l net.Listener) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		name, iflink, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		d.mu.Lock()
		d.last[name], d.iflinks[name] = time.Now(), iflink
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
}

// waitSince waits up to timeout for pod to connect after since.
func (d *dialLog) waitSince(pod string, since time.Time, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		d.mu.Lock()
		ok, changed := d.last[pod].After(since), d.changed
		d.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-deadline:
			return false
		}
	}
}

func (d *dialLog) iflink(pod string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.iflinks[pod]
}

// linkAddress is the MAC address of the link name.
func linkAddress(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/class/net", name, "address"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// vethName is the port of bridge whose interface index is ifindex.
func vethName(t *testing.T, bridge, ifindex string) string {
	t.Helper()
	ports, err := os.ReadDir(filepath.Join("/sys/class/net", bridge, "brif"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if b, err := os.ReadFile(filepath.Join("/sys/class/net", p.Name(), "ifindex")); err == nil && strings.TrimSpace(string(b)) == ifindex {
			return p.Name()
		}
	}
	t.Fatalf("no port of %s has index %s", bridge, ifindex)
	return ""
}

// vethAddress is the MAC address of the port of bridge with ifindex.
func vethAddress(t *testing.T, bridge, ifindex string) string {
	t.Helper()
	return linkAddress(t, vethName(t, bridge, ifindex))
}
