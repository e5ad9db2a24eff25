package k8se2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sandkey/sandkey/pkg/driver/kubernetes"
	"github.com/sandkey/sandkey/pkg/driver/kubetest"
	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/test/binaries"
	"github.com/sandkey/sandkey/test/kubeenv"
)

const (
	// imageRef is the sandbox image: the supervisor as entrypoint, as
	// sandkey-base has it, and busybox as the workload's tools.
	imageRef = "sandkey.local/k8se2e-sandbox:1"
)

var imageOnce sync.Once

// env is one test's world: a namespace, TLS material, a gateway.
type env struct {
	t           testing.TB
	c           *kubetest.Cluster
	ns          string
	dir         string
	state       string
	kubeconfig  string
	caFile      string
	certFile    string
	keyFile     string
	caPool      *x509.CertPool
	sessionAddr string
	httpAddr    string
	gw          *gatewayProc
	// gatewayFlags are added to every `gateway serve` of the env.
	gatewayFlags []string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t)
}

// newEnvWith is newEnv with more flags for the gateway's serve.
func newEnvWith(t testing.TB, gatewayFlags ...string) *env {
	t.Helper()
	c := cluster.Cluster(t)
	// Short: the state directory's sandbox sockets must fit a unix path.
	// The gateway, as root, mounts tmpfs roots there.
	dir := binaries.TempDir(t, "k8s")
	e := &env{t: t, c: c, ns: "k8se2e-" + randid.New(4), dir: dir, gatewayFlags: gatewayFlags}
	e.state = filepath.Join(e.dir, "state")
	c.Namespace(t, e.ns)
	c.ServiceAccount(t, e.ns, kubeenv.SandboxSA)
	kubeenv.GrantGateway(t, c, e.ns, kubeenv.GatewayUser)
	e.kubeconfig = c.KubeconfigFor(t, kubeenv.GatewayUser)
	// The bridge's host address, where pods reach the gateway.
	tlsFiles := kubeenv.WriteTLS(t, e.dir, c.HostIP())
	e.caFile, e.certFile, e.keyFile, e.caPool = tlsFiles.CAFile, tlsFiles.CertFile, tlsFiles.KeyFile, tlsFiles.Pool
	imageOnce.Do(func() { kubeenv.ImportSandboxImage(t, c, imageRef) })
	e.sessionAddr = kubeenv.FreeAddr(t, c.HostIP())
	e.httpAddr = kubeenv.FreeAddr(t, "127.0.0.1")
	t.Cleanup(func() {
		if e.gw != nil {
			e.gw.stop()
		}
		if t.Failed() {
			e.dumpLogs()
		}
	})
	e.startGateway()
	return e
}

// gatewayProc is the real gateway binary running serve.
type gatewayProc struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process ended
}

func (e *env) startGateway() {
	e.t.Helper()
	logf, err := os.OpenFile(filepath.Join(e.dir, "gateway.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(binaries.Gateway, "serve", "--state-dir", e.state,
		"--drivers", "kubernetes", "--driver", "kubernetes",
		"--kubernetes-kubeconfig", e.kubeconfig, "--kubernetes-namespace", e.ns,
		"--kubernetes-service-account", kubeenv.SandboxSA, "--kubernetes-gateway", "tls://"+e.sessionAddr,
		"--kubernetes-ca-file", e.caFile, "--kubernetes-image-pull-policy", "Never",
		"--session-addr", e.sessionAddr, "--session-tls-cert", e.certFile, "--session-tls-key", e.keyFile,
		"--token-lifetime", kubeenv.Lifetime.String(), "--sweep-interval", "100ms", "--heartbeat-interval", "1s",
		"--http-addr", e.httpAddr, "--stop-grace", "2s", "--log-level", "debug")
	cmd.Args = append(cmd.Args, e.gatewayFlags...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.gw = &gatewayProc{cmd: cmd, log: logf, done: make(chan struct{})}
	go func() { cmd.Wait(); close(e.gw.done) }()
	deadline := time.Now().Add(kubeenv.Bound)
	for {
		if resp, err := http.Get("http://" + e.httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("gateway not ready within %s", kubeenv.Bound)
		}
		select {
		case <-e.gw.done:
			e.t.Fatalf("gateway exited: %v", cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the gateway as an operator would (SIGTERM); its pods keep running.
func (g *gatewayProc) stop() {
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		g.cmd.Process.Kill()
		<-g.done
	}
	g.log.Close()
}

func (e *env) stopGateway() {
	e.gw.stop()
	e.gw = nil
}

func (e *env) cli(args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command(binaries.Gateway, append([]string{"--state-dir", e.state}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("gateway %v: %v: %s", args, err, errb.String())
	}
	return out.String(), nil
}

func (e *env) mustCLI(args ...string) string {
	e.t.Helper()
	out, err := e.cli(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

type sandboxView struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	InstanceID   string `json:"instance_id"`
	RunID        string `json:"run_id"`
	LatestGen    uint64 `json:"latest_gen"`
	DeliveredGen uint64 `json:"delivered_gen"`
	Connected    bool   `json:"connected"`
}

func (e *env) get(name string) sandboxView {
	e.t.Helper()
	var v sandboxView
	if err := json.Unmarshal([]byte(e.mustCLI("sandbox", "get", name, "-o", "json")), &v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// create creates and starts a sandbox running sleep.
func (e *env) create(name string) sandboxView {
	e.t.Helper()
	e.mustCLI("sandbox", "create", name, "--driver", "kubernetes", "--image", imageRef, "--start", "--", "/busybox", "sleep", "3600")
	return e.get(name)
}

func (e *env) eventually(what string, limit time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("not within %s: %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) awaitConnected(name string) {
	e.t.Helper()
	e.eventually("sandbox "+name+" connected", kubeenv.Bound, func() bool { return e.get(name).Connected })
}

// projectedToken reads the pod's projected token through sandbox exec.
func (e *env) projectedToken(name string) string {
	e.t.Helper()
	out := e.mustCLI("sandbox", "exec", name, "--", "/busybox", "cat", "/run/sandkey/k8s-sa/token")
	return strings.TrimSpace(out)
}

// exchangeClient is a raw client of the exchange, as anything on the
// network could be.
func (e *env) exchangeClient(sandboxID string) *session.ExchangeClient {
	e.t.Helper()
	c, err := session.NewExchangeClient("tls://"+e.sessionAddr, sandboxID,
		session.WithTLSConfig(&tls.Config{RootCAs: e.caPool, MinVersion: tls.VersionTLS12}))
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) exchange(sandboxID, credential string) (string, error) {
	c := e.exchangeClient(sandboxID)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, _, err := c.Exchange(ctx, credential)
	return tok, err
}

// metric returns the value of a sample of the gateway's /metrics.
func (e *env) metric(name, labels string) float64 {
	e.t.Helper()
	v, err := kubeenv.Metric(e.httpAddr, name, labels)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *env) exchanges(result string) float64 {
	return e.metric("sandkey_exchange_total", `{result="`+result+`"}`)
}

func (e *env) pod(name string) *corev1.Pod {
	e.t.Helper()
	sb := e.get(name)
	p, err := e.c.Client().CoreV1().Pods(e.ns).Get(context.Background(), kubernetes.PodName(sb.ID, sb.InstanceID), metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// dumpLogs shows the gateway's log and every pod's, after a failure.
func (e *env) dumpLogs() {
	if data, err := os.ReadFile(filepath.Join(e.dir, "gateway.log")); err == nil {
		e.t.Logf("gateway log:\n%s", kubeenv.Tail(data, 60))
	}
	ctx := context.Background()
	list, err := e.c.Client().CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, p := range list.Items {
		data, err := e.c.Client().CoreV1().Pods(e.ns).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		e.t.Logf("pod %s (%s) log (%v):\n%s", p.Name, p.Status.Phase, err, kubeenv.Tail(data, 30))
	}
}

func kubernetesClient(t testing.TB, cfg *rest.Config) k8s.Interface {
	t.Helper()
	c, err := k8s.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
