package kubernetes

import (
	"context"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"

	"github.com/sandkey/sandkey/pkg/driver"
)

var _ driver.Logger = (*Driver)(nil)

// Logs implements driver.Logger: the pod log API's output of the sandbox
// container of the sandbox's current pod (its newest: an earlier run's
// is being deleted), stdout and stderr as the kubelet recorded them.
// With follow it keeps streaming until ctx ends, the reader is closed or
// the container stops. A pod whose container has not started yet is the
// API's error.
func (d *Driver) Logs(ctx context.Context, sandboxID string, follow bool) (io.ReadCloser, error) {
	pod, err := d.currentPod(ctx, sandboxID)
	if err != nil {
		return nil, fmt.Errorf("logs of sandbox %s: %w", sandboxID, err)
	}
	stream, err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).
		GetLogs(pod, &corev1.PodLogOptions{Container: ContainerName, Follow: follow}).Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("logs of sandbox %s: pod %s in namespace %s: %w", sandboxID, pod, d.cfg.Namespace, err)
	}
	return stream, nil
}

// currentPod names the sandbox's newest pod; driver.ErrNotFound when
// there is none.
func (d *Driver) currentPod(ctx context.Context, sandboxID string) (string, error) {
	pods, err := d.currentPods(ctx, sandboxID)
	if err != nil {
		return "", err
	}
	if len(pods) == 0 {
		return "", fmt.Errorf("no pod in namespace %s: %w", d.cfg.Namespace, driver.ErrNotFound)
	}
	return pods[len(pods)-1].Name, nil
}
