package kubetest

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sandkey/sandkey/pkg/driver/enginetest"
)

// probePackage is the smoke test's workload.
const probePackage = "github.com/sandkey/sandkey/pkg/driver/kubetest/testdata/probe"

// probeReport is what the probe sends from its pod.
type probeReport struct {
	DataLink  string `json:"data_link"`
	TokenLink string `json:"token_link"`
	Token     string `json:"token"`
}

// TestNodeRunsPodWithProjectedTokenAndLeavesNothingBehind starts a cluster
// with a node, runs a pod of an image ImportImage built, and checks that
// the pod gets Ready, finds its projected ServiceAccount token in the
// ..data layout, reaches a listener on HostIP and sends the token, which
// TokenReview accepts as the pod's; that the pod survives an API server
// restart; and that Stop leaves no process, mount, file, bridge or cgroup
// behind.
func TestNodeRunsPodWithProjectedTokenAndLeavesNothingBehind(t *testing.T) {
	c := Start(t, Options{Kubelet: true})
	if ip := net.ParseIP(c.HostIP()); ip == nil {
		t.Fatalf("HostIP() = %q, not an address", c.HostIP())
	}

	layer := t.TempDir()
	if err := enginetest.BuildStatic(probePackage, filepath.Join(layer, "probe")); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	c.ImportImage(t, "sandkey.local/kubetest-probe:1", layer, []string{"/probe"})
	t.Logf("probe image imported in %s", time.Since(begin).Round(time.Millisecond))

	l, err := net.Listen("tcp", net.JoinHostPort(c.HostIP(), "0"))
	if err != nil {
		t.Fatalf("listen on HostIP: %v", err)
	}
	defer l.Close()
	reports := make(chan probeReport, 1)
	go acceptReport(t, l, reports)

	const ns, sa = "smoke", "workload"
	c.Namespace(t, ns)
	c.ServiceAccount(t, ns, sa)
	pod := probePod(c, ns, sa, l.Addr().String())
	begin = time.Now()
	created, err := c.Client().CoreV1().Pods(ns).Create(ctxT(t), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	c.WaitPodReady(t, ns, pod.Name)
	t.Logf("pod create → Ready in %s", time.Since(begin).Round(time.Millisecond))

	var r probeReport
	select {
	case r = <-reports:
	case <-time.After(time.Minute):
		t.Fatalf("no report from the pod on %s after a minute", l.Addr())
	}
	if !strings.HasPrefix(r.DataLink, "..") || r.TokenLink != "..data/token" {
		t.Errorf("token directory layout: ..data → %q, token → %q; want ..data → a ..<timestamp> dir, token → ..data/token", r.DataLink, r.TokenLink)
	}
	reviewer := bindAuthDelegator(t, c, "sandkey-gateway")
	status := review(t, reviewer, r.Token)
	if !status.Authenticated || status.User.Username != "system:serviceaccount:"+ns+":"+sa {
		t.Fatalf("TokenReview of the pod's token = %+v, want authenticated as %s/%s", status, ns, sa)
	}
	if got := status.User.Extra["authentication.kubernetes.io/pod-uid"]; len(got) != 1 || got[0] != string(created.UID) {
		t.Errorf("TokenReview pod-uid = %v, want [%s]", got, created.UID)
	}

	// Logs travel API server → kubelet (InternalIP) → containerd.
	logs, err := c.Client().CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctxT(t))
	if err != nil || !strings.Contains(string(logs), "probe: reported") {
		t.Errorf("pod logs = %q, %v; want the probe's line", logs, err)
	}

	c.StopAPIServer(t)
	c.StartAPIServer(t)
	c.WaitPodReady(t, ns, pod.Name)

	begin = time.Now()
	dir, bridge, cgroup := c.Dir(), c.node.net.name, c.node.cgroupRoot()
	sandboxes := sandboxIDs(t, bridge)
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("teardown in %s", time.Since(begin).Round(time.Millisecond))
	assertNothingLeft(t, dir, bridge, cgroup, sandboxes)
}

// acceptReport reads one probe report from l.
func acceptReport(t *testing.T, l net.Listener, reports chan<- probeReport) {
	conn, err := l.Accept()
	if err != nil {
		return // the test ended first
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		t.Errorf("read the probe's report: %v", err)
		return
	}
	var r probeReport
	if err := json.Unmarshal(line, &r); err != nil {
		t.Errorf("probe report: %v", err)
		return
	}
	reports <- r
}

// probePod is a pod running the probe with a projected token (audience
// sandkey, 600 s) at /var/run/secrets/sandkey and no default API token.
func probePod(c *Cluster, ns, sa, reportAddr string) *corev1.Pod {
	const tokenDir = "/var/run/secrets/sandkey"
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: ns},
		Spec: corev1.PodSpec{
			// No nodeName: the binder, standing in for the scheduler, sets it.
			ServiceAccountName:            sa,
			AutomountServiceAccountToken:  ptr(false),
			TerminationGracePeriodSeconds: ptr(int64(1)),
			Containers: []corev1.Container{{
				Name:            "probe",
				Image:           "sandkey.local/kubetest-probe:1",
				ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{
					{Name: "TOKEN_DIR", Value: tokenDir},
					{Name: "REPORT_ADDR", Value: reportAddr},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "sandkey-token", MountPath: tokenDir, ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{
				Name: "sandkey-token",
				VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
						Audience: audience, ExpirationSeconds: ptr(int64(600)), Path: "token",
					}}},
				}},
			}},
		},
	}
}

// assertNothingLeft checks that a stopped cluster left no process, mount,
// file, bridge, cgroup, lock, log link or CNI result (of its network, or
// of the loopback of its sandboxes) behind.
func assertNothingLeft(t *testing.T, dir, bridge, cgroup string, sandboxes []string) {
	t.Helper()
	if pids := enginetest.ProcessesNaming(dir); len(pids) != 0 {
		t.Errorf("processes %v still name %s", pids, dir)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory %s still there: %v", dir, err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), dir+"/") {
		t.Errorf("mounts below %s remain", dir)
	}
	links, _ := os.ReadDir(containerLogLinks)
	for _, l := range links {
		if target, _ := os.Readlink(filepath.Join(containerLogLinks, l.Name())); strings.HasPrefix(target, dir) {
			t.Errorf("log link %s into %s remains", l.Name(), dir)
		}
	}
	var results []string
	for _, id := range sandboxes {
		for _, network := range []string{networkName(bridge), "cni-loopback"} {
			found, _ := filepath.Glob(filepath.Join(cniResults, network+"-"+id+"-*"))
			results = append(results, found...)
		}
	}
	if len(results) != 0 {
		t.Errorf("CNI results remain: %v", results)
	}
	// Another cluster may take the slot at once (the clusters of two test
	// packages): then the bridge, cgroups and lock are its own.
	lockPath := filepath.Join(lockDir, "sandkey-kubetest-net-"+strings.TrimPrefix(bridge, "skk")+".lock")
	if holder, err := os.ReadFile(lockPath); err == nil && string(holder) != dir {
		t.Logf("slot of %s taken again by %s; its bridge and cgroups are not checked", bridge, holder)
		return
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", bridge)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bridge %s still there: %v", bridge, err)
	}
	if dirs, _ := cgroupDirs(cgroup); len(dirs) != 0 {
		t.Errorf("cgroups remain: %v", dirs)
	}
	if _, err := os.Stat(lockPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("network lock %s remains: %v", lockPath, err)
	}
}

// TestNodeClearsWhatACrashedRunLeftInItsSlot starts a node with a running
// pod, then "crashes" it as a killed test binary would (every component
// SIGKILLed, the locks dropped, no teardown), and checks that the next
// taker of its network slot removes every process, mount, file, bridge
// and cgroup the crashed run left.
func TestNodeClearsWhatACrashedRunLeftInItsSlot(t *testing.T) {
	c, err := Launch(Options{Kubelet: true})
	if err != nil {
		failOrSkip(t, err)
	}
	const ns = "crash"
	c.Namespace(t, ns)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pause", Namespace: ns},
		Spec: corev1.PodSpec{
			// The default token automount: Namespace published its CA.
			Containers: []corev1.Container{{Name: "pause", Image: PauseImage, ImagePullPolicy: corev1.PullNever}},
		},
	}
	if _, err := c.Client().CoreV1().Pods(ns).Create(ctxT(t), pod, metav1.CreateOptions{}); err != nil {
		c.Stop()
		t.Fatal(err)
	}
	c.WaitPodReady(t, ns, pod.Name)

	// The crash: what the kernel does to a killed test binary's children
	// (Pdeathsig, here SIGKILL so that nothing cleans up), goroutines and
	// locks.
	c.node.stopBinder()
	<-c.node.binder.done
	for _, p := range []*process{c.node.kubelet, c.node.containerd, c.apiserver, c.etcd} {
		p.cmd.Process.Signal(os.Kill)
		<-p.done
	}
	c.node.net.lock.f.Close()
	c.node.host.lock.f.Close()
	c.owner.f.Close()
	c.down = true // its Namespace cleanup must not call the dead API server
	dir, slot, bridge, cgroup := c.dir, c.node.net.slot, c.node.net.name, c.node.cgroupRoot()
	if len(enginetest.ProcessesNaming(dir)) == 0 {
		t.Fatal("no process of the crashed run is left (its shims should be); the test proves nothing")
	}

	sandboxes := sandboxIDs(t, bridge)
	b, err := takeSlot(slot, c.bin.ip, t.TempDir())
	if err != nil || b == nil {
		t.Fatalf("take the crashed run's slot %d: %v (free: %v)", slot, err, b == nil)
	}
	if err := b.release(); err != nil {
		t.Errorf("release slot %d: %v", slot, err)
	}
	// The crashed run's kernel settings: restored if no other node runs.
	h, err := joinHost()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.leave(); err != nil {
		t.Error(err)
	}
	assertNothingLeft(t, dir, bridge, cgroup, sandboxes)
}

// sandboxIDs lists the pod sandboxes CNI holds results for on bridge's
// network; it fails when there are none, for then a test of their removal
// proves nothing.
func sandboxIDs(t *testing.T, bridge string) []string {
	t.Helper()
	results, _ := filepath.Glob(filepath.Join(cniResults, networkName(bridge)+"-*"))
	var ids []string
	for _, path := range results {
		var cached struct {
			ContainerID string `json:"containerId"`
		}
		if data, err := os.ReadFile(path); err == nil && json.Unmarshal(data, &cached) == nil {
			ids = append(ids, cached.ContainerID)
		}
	}
	if len(ids) == 0 {
		t.Fatalf("no CNI result for a sandbox on %s; the pod network was never set up", bridge)
	}
	return ids
}
