package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	informerscorev1 "k8s.io/client-go/informers/core/v1"
	k8s "k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/sandkey/sandkey/pkg/driver"
)

// Name is the driver's name in --drivers.
const Name = "kubernetes"

// Labels and names the driver puts on its pods.
const (
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedBy       = "sandkey"
	LabelSandboxID  = "sandkey.io/sandbox-id"
	LabelInstanceID = "sandkey.io/instance-id"
	// ContainerName is the sandbox's one container.
	ContainerName = "sandbox"
	// tokenVolume is the projected ServiceAccount token volume.
	tokenVolume = "sandkey-sa-token"
)

// Defaults of the driver's settings; the gateway's flags document them.
const (
	DefaultNamespace         = "sandkey"
	DefaultServiceAccount    = "sandkey-sandbox"
	DefaultAudience          = "sandkey"
	DefaultExpirationSeconds = 600 // the API's minimum
	// minExpirationSeconds is the shortest projected token the API issues.
	minExpirationSeconds = 600
	// apiTimeout bounds each API call of the exchange, so that an API
	// server that hangs answers Unavailable, not a stuck supervisor.
	apiTimeout = 5 * time.Second
	// syncTimeout bounds the informer's first list at start.
	syncTimeout = 30 * time.Second
	// stopPoll is how often Stop looks whether a deleted pod is gone, and
	// stopSlack how long past the grace it waits for the kubelet.
	stopPoll  = 100 * time.Millisecond
	stopSlack = 30 * time.Second
)

// Config configures the driver.
type Config struct {
	Client    k8s.Interface
	Namespace string
	// ServiceAccount is the sandboxes' ServiceAccount: pods run as it, and
	// the exchange accepts no other.
	ServiceAccount string
	// Audience is the projected token's audience, the gateway's own.
	Audience          string
	ExpirationSeconds int64
	// Gateway is the shared session listener supervisors dial (tls://host:port),
	// and GatewayCA the PEM bundle they trust for it.
	Gateway    string
	GatewayCA  []byte
	PullPolicy corev1.PullPolicy // IfNotPresent when empty
	// SupervisorImage, when set, makes any image a sandbox: an init
	// container from it (an image holding /supervisor) copies the
	// supervisor into an emptyDir the sandbox container runs it from
	// (guest.SupervisorPath), read-only. Empty: the sandbox image carries the
	// supervisor as its entrypoint (FROM sandkey-base).
	SupervisorImage string
	Logger          *zap.Logger
}

func (c *Config) setDefaults() {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.ServiceAccount == "" {
		c.ServiceAccount = DefaultServiceAccount
	}
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if c.ExpirationSeconds == 0 {
		c.ExpirationSeconds = DefaultExpirationSeconds
	}
	if c.PullPolicy == "" {
		c.PullPolicy = corev1.PullIfNotPresent
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("no Kubernetes client"))
	}
	if c.ExpirationSeconds < minExpirationSeconds {
		errs = append(errs, fmt.Errorf("projected token expiry %ds: the API refuses less than %ds", c.ExpirationSeconds, minExpirationSeconds))
	}
	if !strings.HasPrefix(c.Gateway, "tls://") {
		errs = append(errs, fmt.Errorf("gateway address %q: pods reach the gateway's shared listener over TLS; want tls://host:port", c.Gateway))
	}
	switch c.PullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("image pull policy %q: want Always, IfNotPresent or Never", c.PullPolicy))
	}
	return errors.Join(errs...)
}

// Driver runs sandboxes as Kubernetes pods.
type Driver struct {
	cfg     Config
	log     *zap.Logger
	pods    listerscorev1.PodNamespaceLister
	stopInf context.CancelFunc
	done    chan struct{} // closed when the informer stopped
	closed  sync.Once
}

var (
	_ driver.Driver             = (*Driver)(nil)
	_ driver.RunStarter         = (*Driver)(nil)
	_ driver.CredentialVerifier = (*Driver)(nil)
	_ driver.RunLister          = (*Driver)(nil)
)

// New starts the driver's pod informer and waits for its first list: the
// gateway reconciles sandboxes from it right after. Close stops it.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	informer := newPodInformer(cfg.Client, cfg.Namespace)
	infCtx, stop := context.WithCancel(context.Background())
	d := &Driver{cfg: cfg, log: cfg.Logger, stopInf: stop, done: make(chan struct{}),
		pods: listerscorev1.NewPodLister(informer.GetIndexer()).Pods(cfg.Namespace)}
	go func() {
		defer close(d.done)
		informer.RunWithContext(infCtx)
	}()
	syncCtx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), informer.HasSynced) {
		d.Close()
		return nil, fmt.Errorf("list pods in namespace %s: the API server did not answer within %s; check the kubeconfig and that the namespace exists",
			cfg.Namespace, syncTimeout)
	}
	return d, nil
}

// newPodInformer watches the driver's labelled pods of one namespace:
// the pod informer alone, as client-go's informer factory would link
// every API group's informers into the gateway.
func newPodInformer(client k8s.Interface, namespace string) cache.SharedIndexInformer {
	return informerscorev1.NewFilteredPodInformer(client, namespace, 0,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
		func(o *metav1.ListOptions) { o.LabelSelector = LabelManagedBy + "=" + ManagedBy })
}

// Close stops the informer and waits for it.
func (d *Driver) Close() error {
	d.closed.Do(func() {
		d.stopInf()
		<-d.done
	})
	return nil
}

// Name implements driver.Driver.
func (d *Driver) Name() string { return Name }

// TokenDelivery implements driver.Driver.
func (d *Driver) TokenDelivery() driver.TokenDelivery { return driver.DeliveryK8sSA }

// Create implements driver.Driver. A sandbox has no Kubernetes object
// before it runs: Create only checks what Start will need.
func (d *Driver) Create(_ context.Context, spec driver.Spec) error {
	switch {
	case spec.Image == "" && d.cfg.SupervisorImage == "":
		return fmt.Errorf("sandbox %s: the kubernetes driver needs an image (FROM sandkey-base)", spec.SandboxID)
	case spec.Image == "":
		return fmt.Errorf("sandbox %s: the kubernetes driver needs an image", spec.SandboxID)
	case d.cfg.SupervisorImage != "" && len(spec.Command) == 0:
		return fmt.Errorf("sandbox %s: give the workload's command (gateway sandbox create NAME --image %s -- COMMAND ARGS...): "+
			"with --kubernetes-supervisor-image the supervisor is the container's command, and the gateway cannot read image %s's entrypoint on Kubernetes",
			spec.SandboxID, spec.Image, spec.Image)
	}
	return nil
}

// Start implements driver.Driver.
func (d *Driver) Start(ctx context.Context, spec driver.Spec) error {
	_, err := d.StartRun(ctx, spec)
	return err
}

// StartRun implements driver.RunStarter: it removes the pods of earlier
// runs, creates this run's pod and returns its UID.
func (d *Driver) StartRun(ctx context.Context, spec driver.Spec) (string, error) {
	if err := d.Create(ctx, spec); err != nil {
		return "", err
	}
	if spec.InstanceID == "" {
		return "", fmt.Errorf("start sandbox %s: no instance id", spec.SandboxID)
	}
	if err := d.deletePods(ctx, spec.SandboxID, nil); err != nil {
		return "", fmt.Errorf("start sandbox %s: remove earlier pods: %w", spec.SandboxID, err)
	}
	pod, err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).Create(ctx, d.podFor(spec), metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create pod for sandbox %s in namespace %s: %w", spec.SandboxID, d.cfg.Namespace, err)
	}
	d.log.Info("pod created", zap.String("sandbox", spec.SandboxID), zap.String("pod", pod.Name), zap.String("uid", string(pod.UID)))
	return string(pod.UID), nil
}

// Stop implements driver.Driver: it deletes the sandbox's pods with the
// grace and waits until they are gone.
func (d *Driver) Stop(ctx context.Context, sandboxID string, grace time.Duration) error {
	secs := int64(math.Ceil(grace.Seconds()))
	if err := d.deletePods(ctx, sandboxID, &secs); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", sandboxID, err)
	}
	return d.awaitGone(ctx, sandboxID, grace+stopSlack)
}

// Delete implements driver.Driver. Stop has removed the pods already;
// Delete removes any left without waiting.
func (d *Driver) Delete(ctx context.Context, sandboxID string) error {
	if err := d.deletePods(ctx, sandboxID, nil); err != nil {
		return fmt.Errorf("delete sandbox %s: %w", sandboxID, err)
	}
	return nil
}

// Status implements driver.Driver, from the informer. A sandbox without a
// pod is stopped: the driver makes nothing before Start, and a pod deleted
// behind the gateway's back ended the sandbox.
func (d *Driver) Status(ctx context.Context, sandboxID string) (driver.Status, error) {
	// An API that cannot answer leaves the informer's word.
	pods, err := d.currentPods(ctx, sandboxID)
	if err != nil || len(pods) == 0 {
		return driver.Status{State: driver.StateStopped, Detail: "no pod"}, nil
	}
	return statusOf(pods[len(pods)-1]), nil
}

// statusOf maps a pod to a sandbox status.
func statusOf(pod *corev1.Pod) driver.Status {
	st := driver.Status{InstanceID: pod.Labels[LabelInstanceID], Detail: "pod " + pod.Name + ": " + string(pod.Status.Phase)}
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		st.State = driver.StateStopped
		for _, cs := range pod.Status.ContainerStatuses {
			if t := cs.State.Terminated; cs.Name == ContainerName && t != nil {
				st.ExitCode, st.Exited = int(t.ExitCode), true
			}
		}
	default:
		st.State = driver.StateRunning
		if pod.DeletionTimestamp != nil {
			st.Detail += " (terminating)"
		}
	}
	return st
}

// ListRuns implements driver.RunLister, from the informer.
func (d *Driver) ListRuns(context.Context) ([]driver.Run, error) {
	pods, err := d.pods.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	runs := make([]driver.Run, 0, len(pods))
	for _, p := range pods {
		runs = append(runs, driver.Run{SandboxID: p.Labels[LabelSandboxID], RunID: string(p.UID), Name: p.Name})
	}
	return runs, nil
}

// currentPods returns the sandbox's pods, oldest first, from the informer
// or, when it has none, from the API: the informer may not have seen a
// pod created a moment ago (a start must not start twice, nor logs say
// there is no pod).
func (d *Driver) currentPods(ctx context.Context, sandboxID string) ([]*corev1.Pod, error) {
	pods, err := d.podsOf(sandboxID)
	if err != nil || len(pods) > 0 {
		return pods, err
	}
	list, err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelSandboxID + "=" + sandboxID})
	if err != nil {
		return nil, fmt.Errorf("list pods of sandbox %s: %w", sandboxID, err)
	}
	for i := range list.Items {
		pods = append(pods, &list.Items[i])
	}
	sortPods(pods)
	return pods, nil
}

// podsOf returns the informer's pods of a sandbox, oldest first.
func (d *Driver) podsOf(sandboxID string) ([]*corev1.Pod, error) {
	pods, err := d.pods.List(labels.SelectorFromSet(labels.Set{LabelSandboxID: sandboxID}))
	if err != nil {
		return nil, fmt.Errorf("list pods of sandbox %s: %w", sandboxID, err)
	}
	sortPods(pods)
	return pods, nil
}

// sortPods orders pods oldest first.
func sortPods(pods []*corev1.Pod) {
	sort.Slice(pods, func(i, j int) bool {
		a, b := pods[i].CreationTimestamp, pods[j].CreationTimestamp
		if !a.Equal(&b) {
			return a.Before(&b)
		}
		return pods[i].Name < pods[j].Name
	})
}

// deletePods deletes every pod of the sandbox the API lists (not the
// informer: a pod created a moment ago must go too), with grace seconds
// (the pod's own when nil).
func (d *Driver) deletePods(ctx context.Context, sandboxID string, grace *int64) error {
	api := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace)
	list, err := api.List(ctx, metav1.ListOptions{LabelSelector: LabelSandboxID + "=" + sandboxID})
	if err != nil {
		return fmt.Errorf("list pods of sandbox %s: %w", sandboxID, err)
	}
	var errs []error
	for _, p := range list.Items {
		err := api.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: grace,
			Preconditions: &metav1.Preconditions{UID: &p.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("delete pod %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// awaitGone waits until the API lists no pod of the sandbox, at most limit.
func (d *Driver) awaitGone(ctx context.Context, sandboxID string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(stopPoll)
	defer t.Stop()
	for {
		list, err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelSandboxID + "=" + sandboxID})
		if err == nil && len(list.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			names := []string{}
			if list != nil {
				for _, p := range list.Items {
					names = append(names, p.Name)
				}
			}
			return fmt.Errorf("sandbox %s: pods %v still terminating after %s (last error: %v)", sandboxID, names, limit, err)
		case <-t.C:
		}
	}
}
