package kubetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/sandkey/sandkey/pkg/driver/enginetest"
	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/testpki"
)

// Options says what to start.
type Options struct {
	// Kubelet also starts a node: containerd, the CNI bridge and a kubelet
	// that registers a Ready node. False starts etcd and the API server
	// only (pods then stay Pending, but TokenRequest and TokenReview work).
	Kubelet bool
}

// scratchPrefix starts the name of every cluster's scratch tree, a
// directory of the system temp dir.
const scratchPrefix = "skk"

// Issuer is the ServiceAccount token issuer of every cluster.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// AdminUser is the identity of the admin token and of RESTConfig.
const AdminUser = "kubetest-admin"

const (
	// etcdReadyTimeout bounds etcd's start (measured: 0.4 s).
	etcdReadyTimeout = 60 * time.Second
	// apiReadyTimeout bounds the API server's start to /readyz (measured:
	// 3-6 s alone; far more on a busy 2-core machine).
	apiReadyTimeout = 3 * time.Minute
	// readyPoll is how often a start looks again.
	readyPoll = 100 * time.Millisecond
	// callTimeout bounds one API call the harness makes.
	callTimeout = 30 * time.Second
)

// Cluster is a running cluster: etcd, the API server and, with
// Options.Kubelet, one node. Its methods may be called from several tests
// at once, except Stop, StopAPIServer and StartAPIServer.
type Cluster struct {
	opts       Options
	bin        binaries
	dir        string // the scratch tree: every file of the cluster
	ca         *testpki.Authority
	adminToken string
	apiPort    int
	apiArgs    []string
	kubeconfig string
	owner      *fileLock // on ownerLock in dir, held while the cluster lives

	etcd *process

	mu        sync.Mutex // guards apiserver and down
	apiserver *process
	down      bool // Stop has run

	restConfig *rest.Config
	client     kubernetes.Interface

	node *node // nil without Options.Kubelet

	stopOnce sync.Once
	stopErr  error
}

// Launch starts a cluster with opts and returns when the API server (and
// the node, with Options.Kubelet) is ready. The error is a *MissingError
// when a binary or root is missing. The caller calls Stop. Start is the
// form for one test, NewShared for a package.
func Launch(opts Options) (*Cluster, error) {
	bin, err := findBinaries(opts)
	if err != nil {
		return nil, err
	}
	sweepDeadRuns()
	// Short: unix socket paths of containerd and its shims live below it.
	dir, err := os.MkdirTemp("", scratchPrefix)
	if err != nil {
		return nil, fmt.Errorf("make cluster directory: %w", err)
	}
	owner, err := lockFile(filepath.Join(dir, ownerLock), lockExclusive, false)
	if err != nil || owner == nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("lock the new cluster directory %s: %v", dir, err)
	}
	c := &Cluster{opts: opts, bin: bin, dir: dir, owner: owner}
	if err := c.launch(); err != nil {
		return nil, errors.Join(fmt.Errorf("start cluster in %s: %w", dir, err), c.Stop())
	}
	return c, nil
}

// Start starts a cluster for t alone and stops it when t ends. When a
// binary or root is missing, it skips t, or fails it under CI=true; when
// the cluster fails to start, it fails t.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	begin := time.Now()
	c, err := Launch(opts)
	if err != nil {
		failOrSkip(t, err)
	}
	t.Logf("kubetest: cluster (kubelet %v) ready in %s", opts.Kubelet, time.Since(begin).Round(time.Millisecond))
	t.Cleanup(func() {
		begin := time.Now()
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
		t.Logf("kubetest: cluster stopped in %s", time.Since(begin).Round(time.Millisecond))
	})
	return c
}

func (c *Cluster) launch() error {
	if err := c.writeControlPlaneFiles(); err != nil {
		return err
	}
	if err := c.startEtcd(); err != nil {
		return err
	}
	if err := c.startAPIServer(); err != nil {
		return err
	}
	if err := c.bootstrap(); err != nil {
		return err
	}
	if !c.opts.Kubelet {
		return nil
	}
	n, err := startNode(c)
	c.node = n // set even on failure: Stop tears down what was made
	return err
}

// path is the path of name in the scratch tree.
func (c *Cluster) path(name ...string) string {
	return filepath.Join(append([]string{c.dir}, name...)...)
}

// writeControlPlaneFiles writes the certificates, keys, the token file and
// the admin kubeconfig, and builds the admin client.
func (c *Cluster) writeControlPlaneFiles() error {
	ca, err := testpki.NewAuthority("sandkey-kubetest-ca")
	if err != nil {
		return err
	}
	c.ca = ca
	serverCert, serverKey, err := ca.Issue(testpki.Leaf{CN: "kube-apiserver", Server: true,
		IPs:      []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}})
	if err != nil {
		return err
	}
	c.adminToken = randid.New(32)
	tokens := fmt.Sprintf("%s,%s,%s-uid,system:masters\n", c.adminToken, AdminUser, AdminUser)
	for name, data := range map[string][]byte{
		"ca.crt":        ca.CertPEM,
		"apiserver.crt": serverCert,
		"apiserver.key": serverKey,
		"tokens.csv":    []byte(tokens),
	} {
		if err := writeFile(c.path("pki", name), data); err != nil {
			return err
		}
	}
	if err := writeServiceAccountKeys(c.path("pki", "sa.key"), c.path("pki", "sa.pub")); err != nil {
		return err
	}
	if c.apiPort, err = freePort(); err != nil {
		return err
	}
	c.restConfig = &rest.Config{
		Host:            "https://127.0.0.1:" + strconv.Itoa(c.apiPort),
		BearerToken:     c.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca.CertPEM},
		QPS:             100,
		Burst:           200,
	}
	if c.client, err = kubernetes.NewForConfig(c.restConfig); err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	c.kubeconfig = c.path("admin.kubeconfig")
	return writeKubeconfig(c.kubeconfig, c.restConfig, AdminUser)
}

// writeKubeconfig writes cfg (a token or a client certificate identity)
// as a kubeconfig file for user.
func writeKubeconfig(path string, cfg *rest.Config, user string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{
		Token:                 cfg.BearerToken,
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
	}
	kc.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: user}
	kc.CurrentContext = "kubetest"
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return fmt.Errorf("encode kubeconfig %s: %w", path, err)
	}
	return writeFile(path, data)
}

// freePort returns a TCP port free on loopback right now.
func freePort() (int, error) { return freePortOn("127.0.0.1") }

// startEtcd starts the one etcd member, on loopback, and waits until it
// says it is ready.
func (c *Cluster) startEtcd() error {
	clientPort, err := freePort()
	if err != nil {
		return err
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	logPath := c.path("etcd.log")
	c.etcd, err = startProcess("etcd", logPath, c.bin.etcd,
		"-data-dir", c.path("etcd"),
		"-listen", "http://127.0.0.1:"+strconv.Itoa(clientPort),
		"-peer", "http://127.0.0.1:"+strconv.Itoa(peerPort))
	if err != nil {
		return err
	}
	c.apiArgs = c.apiServerArgs(clientPort)
	return c.etcd.poll("ready", etcdReadyTimeout, 20*time.Millisecond, func() (bool, error) {
		data, err := os.ReadFile(logPath)
		return err == nil && containsLine(data, "ready"), err
	})
}

func containsLine(data []byte, line string) bool {
	for _, l := range splitLines(data) {
		if l == line {
			return true
		}
	}
	return false
}

func splitLines(data []byte) []string {
	var lines []string
	start := 0
	for i, b := range data {
		if b == '\n' {
			lines = append(lines, string(data[start:i]))
			start = i + 1
		}
	}
	return append(lines, string(data[start:]))
}

// apiServerArgs are the API server's flags; see the package doc for why
// each odd one is there.
func (c *Cluster) apiServerArgs(etcdPort int) []string {
	return []string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(etcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--secure-port=" + strconv.Itoa(c.apiPort),
		"--cert-dir=" + c.path("pki"), // unused (the files below serve) but kept off /var/run
		"--tls-cert-file=" + c.path("pki", "apiserver.crt"),
		"--tls-private-key-file=" + c.path("pki", "apiserver.key"),
		"--client-ca-file=" + c.path("pki", "ca.crt"),
		"--service-account-issuer=" + Issuer,
		"--service-account-key-file=" + c.path("pki", "sa.pub"),
		"--service-account-signing-key-file=" + c.path("pki", "sa.key"),
		"--token-auth-file=" + c.path("pki", "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
		// Without it, shutdown leaves the kubelet's watches open and
		// waits the whole request timeout (60 s) for them.
		"--shutdown-watch-termination-grace-period=2s",
	}
}

// startAPIServer starts the API server and waits for /readyz.
func (c *Cluster) startAPIServer() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, err := startProcess("kube-apiserver", c.path("apiserver.log"), c.bin.apiserver, c.apiArgs...)
	if err != nil {
		return err
	}
	c.apiserver = p
	return p.poll("ready (/readyz)", apiReadyTimeout, readyPoll, c.apiReady)
}

// apiReady asks the API server's /readyz once.
func (c *Cluster) apiReady() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	body, err := c.client.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return false, fmt.Errorf("/readyz: %w: %s", err, body)
	}
	return true, nil
}

// stopAPIServer ends the API server (SIGTERM, by pid).
func (c *Cluster) stopAPIServer() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.apiserver
	c.apiserver = nil
	return p.stop()
}

// StopAPIServer stops the API server, keeping etcd and the node: clients
// get connection refused until StartAPIServer.
func (c *Cluster) StopAPIServer(t testing.TB) {
	t.Helper()
	if err := c.stopAPIServer(); err != nil {
		t.Fatal(err)
	}
}

// StartAPIServer starts the API server again, on the same port with the
// same etcd, keys and tokens, and waits until it is ready.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	running := c.apiserver != nil
	c.mu.Unlock()
	if running {
		t.Fatal("StartAPIServer: the API server runs; call StopAPIServer first")
	}
	if err := c.startAPIServer(); err != nil {
		t.Fatal(err)
	}
}

// bootstrap creates what a controller-manager would in the default
// namespace (see populateNamespace).
func (c *Cluster) bootstrap() error {
	return c.populateNamespace(metav1.NamespaceDefault)
}

// rootCAConfigMap is the ConfigMap the controller-manager publishes in
// every namespace, and that the kubelet's default API-access volume
// (kube-api-access-*) needs.
const rootCAConfigMap = "kube-root-ca.crt"

// populateNamespace creates what the controller-manager would in
// namespace ns: its default ServiceAccount and its kube-root-ca.crt
// ConfigMap, so that a pod with the default token automount starts.
func (c *Cluster) populateNamespace(ns string) error {
	if err := c.createServiceAccount(ns, "default"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: rootCAConfigMap, Namespace: ns},
		Data:       map[string]string{"ca.crt": string(c.ca.CertPEM)},
	}
	if _, err := c.client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ConfigMap %s/%s: %w", ns, rootCAConfigMap, err)
	}
	return nil
}

func (c *Cluster) createServiceAccount(ns, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := c.client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ServiceAccount %s/%s: %w", ns, name, err)
	}
	return nil
}

// Stop tears the cluster down in order (the node's pods, kubelet,
// containers, containerd and its shims, mounts, bridge and cgroups; then
// the API server, then etcd: the other order hangs the API server's
// shutdown) and removes the scratch tree. It returns every problem it met
// but always goes on to the next step. Calls after the first return the
// first's result.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		c.stopErr = c.stop()
		c.mu.Lock()
		c.down = true
		c.mu.Unlock()
	})
	return c.stopErr
}

// stopped reports whether Stop has run.
func (c *Cluster) stopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down
}

func (c *Cluster) stop() error {
	var errs []error
	if c.node != nil {
		errs = append(errs, c.node.stop())
	}
	errs = append(errs, c.stopAPIServer(), c.etcd.stop())
	errs = append(errs, removeScratchTree(c.dir))
	c.owner.release(false) // removed with the tree
	return errors.Join(errs...)
}

// removeScratchTree kills by pid what names dir, unmounts what is mounted
// below it and removes it.
func removeScratchTree(dir string) error {
	errs := []error{enginetest.KillLeftovers(dir), enginetest.UnmountBelow(dir)}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove cluster directory: %w", err))
	}
	return errors.Join(errs...)
}

// ownerLock is the file in a scratch tree that its cluster holds locked
// while it lives: a tree whose lock is free belongs to a dead run.
const ownerLock = "owner.lock"

// deadRunAge is how old a scratch tree must be before sweepDeadRuns may
// take it for a dead run's: a cluster being made has its tree a moment
// before it locks it.
const deadRunAge = time.Minute

// sweepDeadRuns removes the scratch trees of runs that died without their
// teardown (a test binary killed by its timeout): their processes got
// SIGKILL from the kernel, but their files and mounts stay. A node's
// bridge, cgroups and outside files are cleared by the next node that
// takes its network slot (see takeSlot).
func sweepDeadRuns() {
	trees, _ := filepath.Glob(filepath.Join(os.TempDir(), scratchPrefix+"*"))
	for _, dir := range trees {
		lockPath := filepath.Join(dir, ownerLock)
		fi, err := os.Stat(lockPath)
		if err != nil || time.Since(fi.ModTime()) < deadRunAge {
			continue // not a tree of this harness, or too young to judge
		}
		l, err := lockFile(lockPath, lockExclusive, false)
		if err != nil || l == nil {
			continue // alive
		}
		removeScratchTree(dir) // best effort: the next run tries again
		l.release(false)
	}
}

// Dir is the cluster's scratch tree: every file of the cluster, the
// components' logs (etcd.log, apiserver.log, containerd.log, kubelet.log)
// among them.
func (c *Cluster) Dir() string { return c.dir }

// Kubeconfig is the path of an admin kubeconfig file (token auth, user
// AdminUser in group system:masters).
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// RESTConfig returns a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Client is the admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// Issuer is the issuer of the cluster's ServiceAccount tokens.
func (c *Cluster) Issuer() string { return Issuer }

// ConfigFor returns a client configuration for user in groups: a client
// certificate the API server trusts (x509 authentication), minted on
// demand so that no identity needs declaring before the cluster starts.
// RBAC applies to it as to any user; bind it roles for a test.
func (c *Cluster) ConfigFor(t testing.TB, user string, groups ...string) *rest.Config {
	t.Helper()
	cfg, err := c.configFor(user, groups)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (c *Cluster) configFor(user string, groups []string) (*rest.Config, error) {
	cert, key, err := c.ca.Issue(testpki.Leaf{CN: user, Orgs: groups})
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host: c.restConfig.Host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.ca.CertPEM,
			CertData: cert,
			KeyData:  key,
		},
		QPS:   c.restConfig.QPS,
		Burst: c.restConfig.Burst,
	}, nil
}

// KubeconfigFor writes a kubeconfig file for user in groups (see
// ConfigFor), for a program the test runs, and returns its path; the file
// goes when t ends.
func (c *Cluster) KubeconfigFor(t testing.TB, user string, groups ...string) string {
	t.Helper()
	cfg, err := c.configFor(user, groups)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := writeKubeconfig(path, cfg, user); err != nil {
		t.Fatal(err)
	}
	return path
}

// Namespace creates the namespace name with what the controller-manager
// (there is none) would put in it: the default ServiceAccount and the
// kube-root-ca.crt ConfigMap. When t ends, the pods of
// the namespace are deleted; the namespace itself stays (no namespace
// controller would finish deleting it).
func (c *Cluster) Namespace(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	if err := c.populateNamespace(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.stopped() {
			return // its pods went with it
		}
		if err := c.deletePods(name); err != nil {
			t.Errorf("cleanup of namespace %s: %v", name, err)
		}
	})
}

// NewNamespace creates a namespace named prefix plus a random suffix, as
// Namespace does, and returns its name: tests sharing a cluster, or run
// again with -count, never meet in it.
func (c *Cluster) NewNamespace(t testing.TB, prefix string) string {
	t.Helper()
	name := prefix + "-" + randid.New(4)
	c.Namespace(t, name)
	return name
}

// ServiceAccount creates the ServiceAccount ns/name (there is no
// controller-manager; see the package doc).
func (c *Cluster) ServiceAccount(t testing.TB, ns, name string) {
	t.Helper()
	if err := c.createServiceAccount(ns, name); err != nil {
		t.Fatal(err)
	}
}

// podsGoneTimeout bounds the wait for deleted pods to be gone: the
// kubelet stops their containers first.
const podsGoneTimeout = 60 * time.Second

// deletePods deletes every pod of namespace ns ("" for all) with a
// one-second grace and waits until they are gone.
func (c *Cluster) deletePods(ns string) error {
	ctx, cancel := context.WithTimeout(context.Background(), podsGoneTimeout)
	defer cancel()
	pods := c.client.CoreV1().Pods(ns)
	list, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods of %q: %w", ns, err)
	}
	grace := int64(1)
	var errs []error
	for _, p := range list.Items {
		err := c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, err))
		}
	}
	for {
		list, err := pods.List(ctx, metav1.ListOptions{})
		if err == nil && len(list.Items) == 0 {
			return errors.Join(errs...)
		}
		select {
		case <-ctx.Done():
			n := -1
			if list != nil {
				n = len(list.Items)
			}
			return errors.Join(append(errs, fmt.Errorf("%d pods of %q not gone after %s: %v", n, ns, podsGoneTimeout, err))...)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
