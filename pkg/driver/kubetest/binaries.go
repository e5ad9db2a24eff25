package kubetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sandkey/sandkey/pkg/testmain"
)

// BinEnv names the directory holding the Kubernetes binaries the harness
// runs (etcd, kube-apiserver, kubelet); scripts/kube-tools.sh builds them
// and prints that directory, and `make test` sets the variable from it.
const BinEnv = "SANDKEY_KUBE_BIN"

// CNIDir is where Debian's containernetworking-plugins installs the CNI
// plugins the node's containerd runs.
const CNIDir = "/usr/lib/cni"

// MissingError says that something the cluster needs is not on this
// machine: a binary, or root.
type MissingError struct {
	What string // the missing binary or privilege
	Fix  string // what to run to get it
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s is missing: %s", e.What, e.Fix)
}

// binaries are the paths of every program a cluster runs.
type binaries struct {
	etcd, apiserver, kubelet string
	containerd, ctr, ip      string
}

// kubeToolsFix is how to get the Kubernetes binaries.
const kubeToolsFix = "run `make test`, or set " + BinEnv + "=$(./scripts/kube-tools.sh) " +
	"(it builds kube-apiserver, kubelet and etcd once per machine, ~30 min cold)"

// findBinaries locates the programs a cluster with opts needs. The error
// is a *MissingError when one is absent.
func findBinaries(opts Options) (binaries, error) {
	var b binaries
	dir := os.Getenv(BinEnv)
	if dir == "" {
		return b, &MissingError{What: "$" + BinEnv, Fix: kubeToolsFix}
	}
	b.etcd = filepath.Join(dir, "etcd")
	b.apiserver = filepath.Join(dir, "kube-apiserver")
	b.kubelet = filepath.Join(dir, "kubelet")
	need := []string{b.etcd, b.apiserver}
	if opts.Kubelet {
		need = append(need, b.kubelet)
	}
	for _, p := range need {
		if err := executable(p); err != nil {
			return b, &MissingError{What: p, Fix: kubeToolsFix}
		}
	}
	if !opts.Kubelet {
		return b, nil
	}
	if os.Geteuid() != 0 {
		return b, &MissingError{What: "root", Fix: "a node (Options.Kubelet) runs containerd and the kubelet, which need root"}
	}
	const installFix = "run ./scripts/kube-tools.sh (as root), or apt-get install -y "
	for _, dep := range []struct {
		bin       *string
		name, pkg string
	}{
		{&b.containerd, "containerd", "containerd"},
		{&b.ctr, "ctr", "containerd"},
		{new(string), "runc", "runc"},
		{&b.ip, "ip", "iproute2"},
	} {
		p, err := exec.LookPath(dep.name)
		if err != nil {
			return b, &MissingError{What: dep.name, Fix: installFix + dep.pkg}
		}
		*dep.bin = p
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if err := executable(filepath.Join(CNIDir, plugin)); err != nil {
			return b, &MissingError{What: "CNI plugin " + filepath.Join(CNIDir, plugin), Fix: installFix + "containernetworking-plugins"}
		}
	}
	return b, nil
}

func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", path)
	}
	return nil
}

// failOrSkip ends t for err: a skip when something the cluster needs is
// missing on a developer's machine, a failure otherwise, and always under
// CI=true, where the Kubernetes tests must never pass by skipping.
func failOrSkip(t testing.TB, err error) {
	t.Helper()
	var missing *MissingError
	testmain.SkipIfMissing(t, err, errors.As(err, &missing))
}
