package kubernetes

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/sandkey/sandkey/pkg/driver"
)

// TestLogsStreamsTheSandboxContainerOfTheNewestPod pins that Logs asks
// the pod log API for the sandbox container with the caller's follow, of
// the sandbox's newest pod (an older run's may still be terminating), and
// returns what the API streams. The fake clientset cannot tell which pod
// was asked for; test/k8se2e reads a real one's.
func TestLogsStreamsTheSandboxContainerOfTheNewestPod(t *testing.T) {
	old, newer := livePod(PodName(testSB, "aaaa"), "uid-a"), livePod(PodName(testSB, "bbbb"), "uid-b")
	old.CreationTimestamp = metav1.NewTime(time.Unix(100, 0))
	newer.CreationTimestamp = metav1.NewTime(time.Unix(200, 0))
	d, cs := newFakeDriver(t, old, newer)
	var asked *corev1.PodLogOptions
	cs.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "log" {
			return false, nil, nil
		}
		asked = a.(k8stesting.GenericAction).GetValue().(*corev1.PodLogOptions)
		return true, &runtime.Unknown{Raw: []byte("workload says hi\n")}, nil
	})
	name, err := d.currentPod(context.Background(), testSB)
	if err != nil || name != newer.Name {
		t.Errorf("current pod = %q, %v; want the newest, %s", name, err, newer.Name)
	}
	for _, follow := range []bool{false, true} {
		r, err := d.Logs(context.Background(), testSB, follow)
		if err != nil {
			t.Fatalf("Logs(follow %v): %v", follow, err)
		}
		out, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(out) != "workload says hi\n" {
			t.Errorf("Logs(follow %v) read %q, %v; want the API's stream", follow, out, err)
		}
		if asked == nil || asked.Container != ContainerName || asked.Follow != follow {
			t.Errorf("Logs(follow %v) asked the API for %+v; want container %s, follow %v", follow, asked, ContainerName, follow)
		}
	}
}

// TestLogsOfASandboxWithoutPodIsNotFound pins ErrNotFound when neither
// the informer nor the API knows a pod of the sandbox.
func TestLogsOfASandboxWithoutPodIsNotFound(t *testing.T) {
	d, _ := newFakeDriver(t)
	if _, err := d.Logs(context.Background(), testSB, false); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("Logs of a sandbox without pod: %v, want driver.ErrNotFound", err)
	}
}
