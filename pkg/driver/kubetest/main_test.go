package kubetest

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// sharedNode is the cluster with a node that the node tests share.
var sharedNode = NewShared(Options{Kubelet: true})

func TestMain(m *testing.M) {
	code := m.Run()
	if err := sharedNode.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop the shared cluster: %v\n", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
