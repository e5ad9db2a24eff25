package kubetest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Audience is the audience the tests request tokens for.
const audience = "sandkey"

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestControlPlaneServesTokenRequestAndTokenReview starts etcd and the API
// server alone (a Shared cluster), mints a ServiceAccount token through TokenRequest, and
// reviews it as an identity bound to system:auth-delegator; an identity
// without that binding is refused. It then stops and restarts the API
// server and checks that the data (the ServiceAccount) survived.
func TestControlPlaneServesTokenRequestAndTokenReview(t *testing.T) {
	c := controlPlane.Cluster(t)
	admin := c.Client()
	if _, err := os.Stat(c.Kubeconfig()); err != nil {
		t.Fatalf("admin kubeconfig: %v", err)
	}

	ns := c.NewNamespace(t, "tokens")
	c.ServiceAccount(t, ns, "workload")
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctxT(t), "workload", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr(int64(600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}

	reviewer := bindAuthDelegator(t, c, "sandkey-gateway")
	status := review(t, reviewer, tr.Status.Token)
	if !status.Authenticated || status.User.Username != "system:serviceaccount:"+ns+":workload" {
		t.Fatalf("TokenReview = %+v, want authenticated as the workload ServiceAccount", status)
	}

	stranger, err := kubernetes.NewForConfig(c.ConfigFor(t, "stranger"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = stranger.AuthenticationV1().TokenReviews().Create(ctxT(t), &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: tr.Status.Token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("TokenReview by an identity without system:auth-delegator = %v, want 403", err)
	}

	down := time.Now()
	c.StopAPIServer(t)
	if _, err := admin.CoreV1().Namespaces().Get(ctxT(t), ns, metav1.GetOptions{}); err == nil {
		t.Fatal("the API server answered after StopAPIServer")
	}
	c.StartAPIServer(t)
	t.Logf("API server stopped and ready again in %s", time.Since(down).Round(time.Millisecond))
	if _, err := admin.CoreV1().ServiceAccounts(ns).Get(ctxT(t), "workload", metav1.GetOptions{}); err != nil {
		t.Fatalf("the ServiceAccount is gone after an API server restart: %v", err)
	}
	if status := review(t, reviewer, tr.Status.Token); !status.Authenticated {
		t.Fatalf("TokenReview after the restart = %+v, want authenticated (same signing key)", status)
	}
}

// bindAuthDelegator returns a client for user, bound to the
// system:auth-delegator cluster role (TokenReview needs it).
func bindAuthDelegator(t testing.TB, c *Cluster, user string) kubernetes.Interface {
	t.Helper()
	_, err := c.Client().RbacV1().ClusterRoleBindings().Create(ctxT(t), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user + "-auth-delegator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("bind %s to system:auth-delegator: %v", user, err)
	}
	cs, err := kubernetes.NewForConfig(c.ConfigFor(t, user))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// review reviews token for the sandkey audience.
func review(t testing.TB, cs kubernetes.Interface, token string) authnv1.TokenReviewStatus {
	t.Helper()
	r, err := cs.AuthenticationV1().TokenReviews().Create(ctxT(t), &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenReview: %v", err)
	}
	return r.Status
}

func ptr[T any](v T) *T { return &v }

func TestUnsetBinEnvNamesTheFix(t *testing.T) {
	t.Setenv(BinEnv, "")
	c, err := Launch(Options{})
	if err == nil {
		c.Stop()
		t.Fatalf("Launch succeeded without %s", BinEnv)
	}
	var missing *MissingError
	if !errors.As(err, &missing) || !strings.Contains(err.Error(), "kube-tools.sh") {
		t.Fatalf("Launch = %v, want a MissingError naming scripts/kube-tools.sh", err)
	}
}

func TestSharedClusterNeverStartedStopsCleanly(t *testing.T) {
	if err := NewShared(Options{Kubelet: true}).Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSweepRemovesOnlyTheTreesOfDeadRuns makes three scratch trees: one
// whose owner lock is free and old (a dead run's), one whose lock is held
// (a live cluster's), one too young to judge; only the first goes.
func TestSweepRemovesOnlyTheTreesOfDeadRuns(t *testing.T) {
	tree := func(age time.Duration) string {
		dir, err := os.MkdirTemp("", scratchPrefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		lock := filepath.Join(dir, ownerLock)
		if err := os.WriteFile(lock, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "etcd.log"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		then := time.Now().Add(-age)
		if err := os.Chtimes(lock, then, then); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dead, alive, young := tree(2*deadRunAge), tree(2*deadRunAge), tree(0)
	l, err := lockFile(filepath.Join(alive, ownerLock), lockExclusive, false)
	if err != nil || l == nil {
		t.Fatalf("lock %s: %v", alive, err)
	}
	defer l.release(false)

	sweepDeadRuns()
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead run's tree %s is still there: %v", dead, err)
	}
	for _, dir := range []string{alive, young} {
		if _, err := os.Stat(filepath.Join(dir, "etcd.log")); err != nil {
			t.Errorf("sweep removed %s: %v", dir, err)
		}
	}
}

// TestHostStateReadsBothRecordFormats pins that the last node restores
// the kernel settings from the record of either version of the harness
// (a run of an older tree may have written it), and names the file when
// the record is neither.
func TestHostStateReadsBothRecordFormats(t *testing.T) {
	for _, data := range []string{
		`{"sysctls":{"kernel/panic":"0"},"preexisting":["/var/lib/cni"]}`,
		`{"kernel/panic":"0"}`,
	} {
		st, err := decodeHostState([]byte(data))
		if err != nil || st.Sysctls["kernel/panic"] != "0" {
			t.Errorf("decodeHostState(%s) = %+v, %v; want kernel/panic=0", data, st, err)
		}
	}
	if _, err := decodeHostState([]byte(`{"sysctls":[1]}`)); err == nil {
		t.Error("decodeHostState of a malformed record: no error")
	}
}
