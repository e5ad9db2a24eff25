package kubetest

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

const (
	// binderRetry is how long the binder waits before it lists and
	// watches again after its watch ended (the API server stopped, say).
	binderRetry = 200 * time.Millisecond
	// binderRelist bounds a watch, so that a pod whose binding failed is
	// tried again at the next listing.
	binderRelist = 10 * time.Second
)

// unscheduled selects the pods that no node was chosen for.
var unscheduled = fields.OneTermEqualSelector("spec.nodeName", "").String()

// binder stands in for kube-scheduler, which tools/kube does not build:
// it binds every pod without a node to the one node, through the real
// Binding API, as the scheduler would. It runs until its context ends.
type binder struct {
	client kubernetes.Interface
	node   string
	done   chan struct{}
}

// startBinder starts binding pods to node until ctx ends; wait for its
// end on the returned binder's done.
func startBinder(ctx context.Context, client kubernetes.Interface, node string) *binder {
	b := &binder{client: client, node: node, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			b.bindPending(ctx)
			select {
			case <-ctx.Done():
				return
			case <-time.After(binderRetry):
			}
		}
	}()
	return b
}

// bindPending binds the pods that wait for a node now, then those that
// come, until the watch ends.
func (b *binder) bindPending(ctx context.Context) {
	pods := b.client.CoreV1().Pods(metav1.NamespaceAll)
	list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: unscheduled})
	if err != nil {
		return
	}
	for i := range list.Items {
		b.bind(ctx, &list.Items[i])
	}
	timeout := int64(binderRelist / time.Second)
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: unscheduled, ResourceVersion: list.ResourceVersion, TimeoutSeconds: &timeout})
	if err != nil {
		return
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if pod, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Added {
			b.bind(ctx, pod)
		}
	}
}

// bind binds pod to the node, unless it is being deleted or asks for
// another scheduler.
func (b *binder) bind(ctx context.Context, pod *corev1.Pod) {
	if pod.DeletionTimestamp != nil || pod.Spec.SchedulerName != corev1.DefaultSchedulerName {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	// A failure is retried at the next listing.
	b.client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: b.node},
	}, metav1.CreateOptions{})
}
