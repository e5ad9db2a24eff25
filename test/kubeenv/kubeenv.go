// Package kubeenv holds what the end-to-end suites that run real gateway
// binaries on the kubetest cluster (test/k8se2e, test/replicas) set up
// alike: the TLS material of the gateway's listeners, the gateway's RBAC
// in a namespace, the sandbox image, and reading a gateway's /metrics.
package kubeenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
	"github.com/sandkey/sandkey/pkg/driver/kubetest"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/session/exectest"
	"github.com/sandkey/sandkey/pkg/testpki"
	"github.com/sandkey/sandkey/test/binaries"
)

// What the Kubernetes suites (k8se2e, replicas) share.
const (
	// SandboxSA is the sandboxes' ServiceAccount, without any RBAC.
	SandboxSA = "sandbox"
	// GatewayUser is the gateway's identity in the cluster (for replicas,
	// one ServiceAccount for the Deployment's pods, in a real cluster).
	GatewayUser = "sandkey-gateway"
	// Lifetime is the sandkey token lifetime, the shortest allowed.
	Lifetime = 10 * time.Second
	// Bound is the generous limit of waits for pods, starts and sessions
	// on a loaded 2-core machine.
	Bound = 90 * time.Second
)

// WriteTLS makes a CA and a serving certificate for the given IP
// addresses (the bridge's host address, where pods reach a gateway;
// 127.0.0.1 for an operator API) in dir: ca.pem, tls.crt, tls.key.
func WriteTLS(t testing.TB, dir string, ips ...string) testpki.Serving {
	t.Helper()
	var addrs []net.IP
	for _, ip := range ips {
		addrs = append(addrs, net.ParseIP(ip))
	}
	files, err := testpki.WriteServing(dir, addrs...)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// GrantGateway gives user what deploy/kubernetes gives the gateway's
// ServiceAccount: TokenReview (system:auth-delegator), pods and their
// logs in namespace ns. Nothing else.
func GrantGateway(t testing.TB, c *kubetest.Cluster, ns, user string) {
	t.Helper()
	ctx := context.Background()
	rbac := c.Client().RbacV1()
	subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user + "-auth-delegator"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects: subjects}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "sandkey-gateway"}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"pods"},
		Verbs: []string{"get", "list", "watch", "create", "delete"},
	}, {
		APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"},
	}}}
	if _, err := rbac.Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "sandkey-gateway"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "sandkey-gateway"},
		Subjects: subjects}
	if _, err := rbac.RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// ImportSandboxImage puts the real supervisor binary (the entrypoint, as
// sandkey-base has it) and a static busybox (the workload's tools) into
// the node's image store as ref.
func ImportSandboxImage(t testing.TB, c *kubetest.Cluster, ref string) {
	t.Helper()
	layer := t.TempDir()
	for src, dst := range map[string]string{binaries.Supervisor: "supervisor", "/bin/busybox": "busybox"} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("image file %s: %v (busybox comes from Debian's busybox-static)", src, err)
		}
		if err := os.WriteFile(filepath.Join(layer, dst), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c.ImportImage(t, ref, layer, []string{"/supervisor", "--"})
}

// FreePort returns a TCP port free on ip now.
func FreePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr is FreePort as host:port.
func FreeAddr(t testing.TB, ip string) string {
	t.Helper()
	port, err := FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

// FreeAddrs is n distinct host:port addresses free on ip now. Every
// listener stays open until all n are chosen: ports found one at a time,
// each closed before the next is asked for, can come back twice.
func FreeAddrs(t testing.TB, ip string, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

// Tail is the last n lines of data.
func Tail(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Metric returns the value of one sample (name and labels exactly as
// exposed, e.g. `{result="ok"}`, or "" for none) of the /metrics a
// gateway serves at httpAddr; 0 when the sample is absent.
func Metric(httpAddr, name, labels string) (float64, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s/metrics: %s", httpAddr, resp.Status)
	}
	prefix := name + labels + " "
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("metric %s%s: %w", name, labels, err)
			}
			return f, nil
		}
	}
	return 0, sc.Err()
}

// AdminExec is an exectest.ExecFunc on the operator API c, as `sandbox
// exec -i -t` calls it, for the sandbox ref.
func AdminExec(c adminpb.AdminClient, ref string) exectest.ExecFunc {
	return func(ctx context.Context, req session.ExecRequest) (session.ExecResult, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.Exec(ctx)
		if err != nil {
			return session.ExecResult{}, err
		}
		start := &adminpb.ExecStart{Request: &adminpb.ExecSandboxRequest{Sandbox: ref, Argv: req.Argv, Env: req.Env},
			Stdin: req.StreamStdin, Tty: req.TTY,
			Window: &adminpb.WindowSize{Rows: uint32(req.Window.Rows), Cols: uint32(req.Window.Cols)}}
		if err := stream.Send(&adminpb.ExecInput{Msg: &adminpb.ExecInput_Start{Start: start}}); err != nil {
			return session.ExecResult{}, err
		}
		var sender sync.WaitGroup
		sender.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case in := <-req.Input:
					if stream.Send(&adminpb.ExecInput{Msg: &adminpb.ExecInput_Stdin{Stdin: in.Stdin}}) != nil {
						return
					}
				}
			}
		})
		defer func() { cancel(); sender.Wait() }()
		for {
			msg, err := stream.Recv()
			if err != nil {
				return session.ExecResult{}, fmt.Errorf("exec stream ended without an exit: %w", err)
			}
			switch {
			case msg.GetStdout() != nil:
				req.Stdout.Write(msg.GetStdout())
			case msg.GetStderr() != nil:
				req.Stderr.Write(msg.GetStderr())
			case msg.GetExit() != nil:
				x := msg.GetExit()
				return session.ExecResult{ExitCode: int(x.GetCode()), Signal: int(x.GetSignal()), Error: x.GetError()}, nil
			}
		}
	}
}
