package gatewaycmd

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/kubernetes"
)

// kubernetesOptions are the kubernetes driver's flags.
type kubernetesOptions struct {
	kubeconfig     string
	namespace      string
	serviceAccount string
	audience       string
	expiration     int64
	gateway        string
	caFile         string
	pullPolicy     string
	supervisorImg  string
}

// The exchange asks the API server twice per call; client-go's default
// limit (5 queries/s) would queue a fleet's reconnections behind each other.
const (
	kubernetesQPS   = 100
	kubernetesBurst = 200
)

func addKubernetesFlags(fs *pflag.FlagSet, o *kubernetesOptions) {
	fs.StringVar(&o.kubeconfig, "kubernetes-kubeconfig", "", "kubeconfig file of the kubernetes driver (default: the in-cluster ServiceAccount config)")
	fs.StringVar(&o.namespace, "kubernetes-namespace", kubernetes.DefaultNamespace, "namespace of the sandboxes' pods")
	fs.StringVar(&o.serviceAccount, "kubernetes-service-account", kubernetes.DefaultServiceAccount, "ServiceAccount the sandboxes' pods run as (give it no RBAC at all); the exchange accepts no other")
	fs.StringVar(&o.audience, "kubernetes-audience", kubernetes.DefaultAudience, "audience of the pods' projected ServiceAccount tokens, checked by TokenReview")
	fs.Int64Var(&o.expiration, "kubernetes-token-expiration-seconds", kubernetes.DefaultExpirationSeconds, "lifetime of the projected tokens, in seconds (600 is the API's minimum; the kubelet rotates them at 80%)")
	fs.StringVar(&o.gateway, "kubernetes-gateway", "", "address the pods' supervisors dial: tls://host:port of this gateway's --session-addr as pods reach it (default: none; required with the kubernetes driver)")
	fs.StringVar(&o.caFile, "kubernetes-ca-file", "", "PEM bundle the supervisors trust for --kubernetes-gateway, passed in their environment (default: the image's system roots)")
	fs.StringVar(&o.pullPolicy, "kubernetes-image-pull-policy", string(corev1.PullIfNotPresent), "image pull policy of the sandboxes' pods: Always, IfNotPresent or Never")
	fs.StringVar(&o.supervisorImg, "kubernetes-supervisor-image", "", "image holding /supervisor (FROM scratch is enough): when set, any image is a sandbox, an init container copying the supervisor in, and every sandbox needs a command (default: none, sandbox images carry the supervisor, FROM sandkey-base)")
}

func buildKubernetesDriver(env driverEnv, o *kubernetesOptions) (driver.Driver, error) {
	if o.gateway == "" {
		return nil, fmt.Errorf("--kubernetes-gateway is required: the tls:// address at which pods reach this gateway's --session-addr")
	}
	var ca []byte
	if o.caFile != "" {
		var err error
		if ca, err = os.ReadFile(o.caFile); err != nil {
			return nil, fmt.Errorf("--kubernetes-ca-file: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("--kubernetes-ca-file %s: no PEM certificate in it", o.caFile)
		}
	}
	cfg, err := kubernetesConfig(o.kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = kubernetesQPS, kubernetesBurst
	client, err := k8s.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return kubernetes.New(context.Background(), kubernetes.Config{
		Client: client, Namespace: o.namespace, ServiceAccount: o.serviceAccount, Audience: o.audience,
		ExpirationSeconds: o.expiration, Gateway: o.gateway, GatewayCA: ca,
		PullPolicy: corev1.PullPolicy(o.pullPolicy), SupervisorImage: o.supervisorImg, Logger: env.log.Named(kubernetes.Name),
	})
}

// kubernetesConfig reads a kubeconfig file, or the pod's own config when
// the gateway runs in the cluster.
func kubernetesConfig(path string) (*rest.Config, error) {
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config (give --kubernetes-kubeconfig outside a cluster): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("--kubernetes-kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}
