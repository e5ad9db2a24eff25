package kubetest

import (
	"fmt"
	"testing"

	"github.com/sandkey/sandkey/pkg/testmain"
)

// controlPlane is a cluster without a node, shared the way a package of
// driver tests would share one.
var controlPlane = NewShared(Options{})

func TestMain(m *testing.M) {
	testmain.Run(m, func() error {
		if err := controlPlane.Stop(); err != nil {
			return fmt.Errorf("stop the shared control plane: %w", err)
		}
		return nil
	})
}
