package docker

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/sandkey/sandkey/pkg/driver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The driver's behaviour is tested against a real engine in package
// container, which runs the conformance suite on both engines.

func TestDriverIsNamedDockerAndDeliversTheTokenDirectoryByBindMount(t *testing.T) {
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Name() != "docker" || d.Name() != Name {
		t.Errorf("Name() = %q, want %q", d.Name(), "docker")
	}
	if d.TokenDelivery() != driver.DeliveryDirBind {
		t.Errorf("TokenDelivery() = %q, want %q", d.TokenDelivery(), driver.DeliveryDirBind)
	}
	if e := Engine(); e.DefaultHost != "unix:///var/run/docker.sock" {
		t.Errorf("default host = %q, want %q", e.DefaultHost, "unix:///var/run/docker.sock")
	}
}
