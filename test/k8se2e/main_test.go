package k8se2e

import (
	"testing"

	"github.com/sandkey/sandkey/pkg/driver/kubetest"
	"github.com/sandkey/sandkey/test/binaries"
)

// cluster is the package's one cluster, started by the first test.
var cluster = kubetest.NewShared(kubetest.Options{Kubelet: true})

func TestMain(m *testing.M) { binaries.RunTests(m, cluster.Stop) }
