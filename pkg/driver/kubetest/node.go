package kubetest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/sandkey/sandkey/pkg/driver/enginetest"
)

// NodeName is the name the kubelet registers its node under.
const NodeName = "sandkey-node"

const (
	// containerdReadyTimeout bounds containerd's start to a listening
	// socket.
	containerdReadyTimeout = time.Minute
	// nodeReadyTimeout bounds the kubelet's start to a Ready node
	// (measured: ~6 s from nothing, on an idle machine).
	nodeReadyTimeout = 3 * time.Minute
	// ctrTimeout bounds one ctr call of the teardown.
	ctrTimeout = 30 * time.Second
)

// node is the cluster's one node: containerd, the CNI bridge and a
// kubelet, with everything they write in the scratch tree (see the
// package doc for what they write elsewhere, and how Stop removes it).
type node struct {
	c      *Cluster
	nodeIP string
	net    *bridgeNet
	host   *hostShare

	containerd *process
	kubelet    *process

	stopBinder context.CancelFunc
	binder     *binder
}

// startNode brings up the node of c, in the package doc's order: its
// share of the host, the bridge, the cgroup root, the CNI configuration,
// containerd, the pause image, the binder and the kubelet; it returns
// when the node is Ready. On failure it returns the node as far as it
// got, for Stop.
func startNode(c *Cluster) (*node, error) {
	n := &node{c: c}
	var err error
	if n.nodeIP, err = defaultRouteIPv4(); err != nil {
		return n, err
	}
	if n.host, err = joinHost(); err != nil {
		return n, err
	}
	if n.net, err = takeBridgeNet(c.bin.ip, c.dir); err != nil {
		return n, err
	}
	if err := makeCgroupRoot(n.cgroupRoot()); err != nil {
		return n, err
	}
	if err := n.writeCNIConfig(); err != nil {
		return n, err
	}
	if err := n.startContainerd(); err != nil {
		return n, err
	}
	pauseDir := c.path("pause")
	if err := os.MkdirAll(pauseDir, 0o700); err != nil {
		return n, fmt.Errorf("make %s: %w", pauseDir, err)
	}
	if err := enginetest.BuildStatic(PausePackage, filepath.Join(pauseDir, "pause")); err != nil {
		return n, fmt.Errorf("build the pause image: %w", err)
	}
	if err := n.importImage(PauseImage, pauseDir, []string{"/pause"}); err != nil {
		return n, err
	}
	var ctx context.Context
	ctx, n.stopBinder = context.WithCancel(context.Background())
	n.binder = startBinder(ctx, c.client, NodeName)
	if err := n.startKubelet(); err != nil {
		return n, err
	}
	return n, nil
}

// NodeName is the name of the cluster's node, which the binder gives every
// pod that names none.
func (c *Cluster) NodeName() string { return NodeName }

// HostIP is the address pods reach the host at: the bridge's own address,
// in the pods' subnet. A listener on it is reachable from pods (and from
// the host); it is empty without a node.
func (c *Cluster) HostIP() string {
	if c.node == nil || c.node.net == nil {
		return ""
	}
	return c.node.net.gateway
}

// PodSubnet is the subnet pods get their addresses from (a /24 of
// 10.88.0.0/16); pods have a route to it and to nothing else. Empty
// without a node.
func (c *Cluster) PodSubnet() string {
	if c.node == nil || c.node.net == nil {
		return ""
	}
	return c.node.net.subnet
}

// socket is containerd's API socket.
func (n *node) socket() string { return n.c.path("containerd", "containerd.sock") }

// cgroupRoot is the cgroup, in every hierarchy, that holds every pod of
// this node (the kubelet's cgroupRoot): named after the bridge, so that
// two clusters running at once never share it.
func (n *node) cgroupRoot() string { return cgroupRootOf(n.net.name) }

// containerdConfig is containerd's configuration; see the package doc
// for why each odd setting is there.
const containerdConfig = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = %[3]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[6]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
    max_conf_num = 1
`

// startContainerd starts containerd on its own configuration and waits
// until its socket answers.
func (n *node) startContainerd() error {
	conf := fmt.Sprintf(containerdConfig,
		n.c.path("containerd", "root"), n.c.path("containerd", "state"), n.socket(),
		n.c.path("containerd", "opt"), PauseImage, n.c.path("runc"),
		CNIDir, n.c.path("cni", "net.d"))
	confPath := n.c.path("containerd", "config.toml")
	if err := writeFile(confPath, []byte(conf)); err != nil {
		return err
	}
	var err error
	n.containerd, err = startProcess("containerd", n.c.path("containerd.log"), n.c.bin.containerd, "--config", confPath)
	if err != nil {
		return err
	}
	return n.containerd.poll("listening", containerdReadyTimeout, 50*time.Millisecond, func() (bool, error) {
		conn, err := net.Dial("unix", n.socket())
		if err != nil {
			return false, err
		}
		conn.Close()
		return true, nil
	})
}

// writeCNIConfig writes the network of the pods: the bridge this node
// made (isGateway false: the bridge already has its address, and the
// plugin then enables no IP forwarding on the host) and host-local
// addresses in the bridge's subnet, kept in the scratch tree. Pods get
// the subnet's route only: nothing beyond the bridge.
func (n *node) writeCNIConfig() error {
	conf, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       networkName(n.net.name),
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      n.net.name,
			"isGateway":   false,
			"ipMasq":      false,
			"hairpinMode": false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": n.net.subnet, "gateway": n.net.gateway}}},
				"dataDir": n.c.path("cni", "ipam"),
			},
		}},
	}, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(n.c.path("cni", "net.d", "10-sandkey.conflist"), conf)
}

// kubeletConfig is the kubelet's configuration; see the package doc for
// why each odd setting is there.
func (n *node) kubeletConfig(port int) map[string]any {
	return map[string]any{
		"kind":                     "KubeletConfiguration",
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"address":                  n.nodeIP,
		"port":                     port,
		"readOnlyPort":             0,
		"healthzPort":              0,
		"containerRuntimeEndpoint": "unix://" + n.socket(),
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": true},
			"webhook":   map[string]any{"enabled": false},
		},
		"authorization":                 map[string]any{"mode": "AlwaysAllow"},
		"cgroupDriver":                  "cgroupfs",
		"cgroupRoot":                    n.cgroupRoot(),
		"cgroupsPerQOS":                 true,
		"failCgroupV1":                  false,
		"failSwapOn":                    false,
		"enforceNodeAllocatable":        []string{},
		"rotateCertificates":            false,
		"serverTLSBootstrap":            false,
		"localStorageCapacityIsolation": false,
		"evictionHard": map[string]string{
			"memory.available":   "1Mi",
			"nodefs.available":   "1%",
			"nodefs.inodesFree":  "1%",
			"imagefs.available":  "1%",
			"imagefs.inodesFree": "1%",
		},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"podLogsDir":                  n.c.path("kubelet", "pod-logs"),
		"volumePluginDir":             n.c.path("kubelet", "volume-plugins"),
		"resolvConf":                  "",
		"makeIPTablesUtilChains":      false,
	}
}

// startKubelet writes the kubelet's configuration, starts it and waits
// until its node is Ready.
func (n *node) startKubelet() error {
	port, err := freePortOn(n.nodeIP)
	if err != nil {
		return err
	}
	conf, err := json.MarshalIndent(n.kubeletConfig(port), "", "  ")
	if err != nil {
		return err
	}
	confPath := n.c.path("kubelet", "config.yaml") // JSON is YAML
	if err := writeFile(confPath, conf); err != nil {
		return err
	}
	for _, d := range []string{"pod-logs", "volume-plugins", "root", "certs"} {
		if err := os.MkdirAll(n.c.path("kubelet", d), 0o700); err != nil {
			return fmt.Errorf("make kubelet directory: %w", err)
		}
	}
	n.kubelet, err = startProcess("kubelet", n.c.path("kubelet.log"), n.c.bin.kubelet,
		"--config="+confPath,
		"--kubeconfig="+n.c.kubeconfig,
		"--root-dir="+n.c.path("kubelet", "root"),
		"--cert-dir="+n.c.path("kubelet", "certs"),
		"--hostname-override="+NodeName,
		"--node-ip="+n.nodeIP,
	)
	if err != nil {
		return err
	}
	return n.kubelet.poll("a Ready node", nodeReadyTimeout, 200*time.Millisecond, n.nodeReady)
}

// nodeReady reports whether the node is registered and Ready.
func (n *node) nodeReady() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node, err := n.c.client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			if cond.Status == corev1.ConditionTrue {
				return true, nil
			}
			return false, fmt.Errorf("node %s: %s: %s", NodeName, cond.Reason, cond.Message)
		}
	}
	return false, fmt.Errorf("node %s has no Ready condition yet", NodeName)
}

// freePortOn returns a TCP port free on ip right now.
func freePortOn(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// defaultRouteIPv4 is the IPv4 address of the interface the default route
// leaves by (eth0 here): the node's InternalIP. The kubelet refuses a
// loopback node IP.
func defaultRouteIPv4() (string, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return "", fmt.Errorf("find the node IP: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var ifname string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 2 && fields[1] == "00000000" {
			ifname = fields[0]
			break
		}
	}
	if ifname == "" {
		return "", errors.New("find the node IP: no default route (the kubelet needs a non-loopback node IP)")
	}
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return "", fmt.Errorf("find the node IP: %w", err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return "", fmt.Errorf("find the node IP: addresses of %s: %w", ifname, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
	}
	return "", fmt.Errorf("find the node IP: %s has no IPv4 address", ifname)
}

// stop tears the node down in order: the binder; the pods (through the
// API server, so that the kubelet stops them and CNI releases their
// addresses); the kubelet; containerd's tasks and containers; containerd;
// its shims; the processes left in the node's cgroups; the mounts below
// the scratch tree; the cgroups; what the node wrote outside the scratch
// tree; the bridge. It goes on past every error and returns them all.
func (n *node) stop() error {
	var errs []error
	if n.binder != nil {
		n.stopBinder()
		<-n.binder.done
	}
	if n.kubelet != nil {
		if ended, _ := n.kubelet.exited(); !ended && n.c.apiUp() {
			errs = append(errs, n.c.deletePods(""))
		}
	}
	errs = append(errs, n.kubelet.stop())
	if n.containerd != nil {
		if ended, _ := n.containerd.exited(); !ended {
			errs = append(errs, n.removeContainers())
		}
	}
	errs = append(errs, n.containerd.stop())
	errs = append(errs, enginetest.KillLeftovers(n.c.dir))
	if n.net != nil {
		errs = append(errs, killCgroup(n.cgroupRoot()))
	}
	errs = append(errs, enginetest.UnmountBelow(n.c.dir))
	if n.net != nil {
		errs = append(errs, removeCgroup(n.cgroupRoot()))
		errs = append(errs, removeOutsideFiles(n.c.dir, n.net.name))
		errs = append(errs, n.net.release())
	}
	errs = append(errs, n.host.leave())
	return errors.Join(errs...)
}

// apiUp reports whether the API server runs.
func (c *Cluster) apiUp() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apiserver != nil
}

// removeContainers kills every task of containerd's k8s.io namespace and
// removes every container, so that the shims end and the rootfs and
// network namespaces are released.
func (n *node) removeContainers() error {
	var errs []error
	ids, err := n.ctr("containers", "list", "--quiet")
	if err != nil {
		return err
	}
	for _, id := range ids {
		n.ctr("tasks", "kill", "--signal", "SIGKILL", id) // no task: nothing to kill
	}
	for _, id := range ids {
		deadline := time.Now().Add(ctrTimeout)
		for {
			_, err := n.ctr("tasks", "delete", "--force", id)
			if err == nil || strings.Contains(err.Error(), "not found") || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := n.ctr("containers", "delete", id); err != nil && !strings.Contains(err.Error(), "not found") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ctr runs ctr on the node's containerd in the k8s.io namespace and
// returns the lines of its output.
func (n *node) ctr(args ...string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
	defer cancel()
	full := append([]string{"--address", n.socket(), "--namespace", "k8s.io"}, args...)
	out, err := exec.CommandContext(ctx, n.c.bin.ctr, full...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.Fields(string(out)), nil
}

// podReadyTimeout bounds WaitPodReady (measured: a pod is Ready ~1 s after
// its creation).
const podReadyTimeout = 2 * time.Minute

// WaitPodReady watches the pod ns/name until its Ready condition is true,
// and returns it; it fails t with the pod's status and the kubelet's log
// when the pod is not Ready within two minutes.
func (c *Cluster) WaitPodReady(t testing.TB, ns, name string) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), podReadyTimeout)
	defer cancel()
	w, err := c.client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		t.Fatalf("watch pod %s/%s: %v", ns, name, err)
	}
	defer w.Stop()
	var last *corev1.Pod
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			break
		}
		pod, ok := ev.Object.(*corev1.Pod)
		if !ok {
			continue
		}
		last = pod
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return pod
			}
		}
	}
	if last == nil {
		t.Fatalf("pod %s/%s not Ready: %v", ns, name, ctx.Err())
	}
	t.Fatalf("pod %s/%s not Ready: phase %s, node %q, conditions %+v, containers %+v\n%s", ns, name,
		last.Status.Phase, last.Spec.NodeName, last.Status.Conditions, last.Status.ContainerStatuses, logTail(c.path("kubelet.log")))
	return nil
}
