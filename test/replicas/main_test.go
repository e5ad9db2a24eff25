package replicas

import (
	"testing"

	"github.com/sandkey/sandkey/pkg/driver/kubetest"
	"github.com/sandkey/sandkey/pkg/store/pgtest"
	"github.com/sandkey/sandkey/test/binaries"
)

// cluster is the package's one cluster, started by the first test that
// asks for it.
var cluster = kubetest.NewShared(kubetest.Options{Kubelet: true})

// postgres is the package's one Postgres server; each test has a schema
// of its own on it.
var postgres pgtest.Shared

func TestMain(m *testing.M) { binaries.RunTests(m, cluster.Stop, postgres.Stop) }
