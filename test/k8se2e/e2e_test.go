package k8se2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sandkey/sandkey/pkg/driver/kubernetes"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/test/kubeenv"
)

// Acceptance 1: a sandbox is a running pod with the projected volume, the
// sandbox ServiceAccount and its labels; the pod's UID is recorded; exec
// works once the supervisor registered through the exchange.
func TestSandboxRunsAsAPodAndRegistersThroughTheExchange(t *testing.T) {
	e := newEnv(t)
	sb := e.create("web")
	e.awaitConnected("web")
	pod := e.pod("web")

	if sb.RunID == "" || sb.RunID != string(pod.UID) {
		t.Errorf("recorded run %q, pod uid %q: the store must hold the pod's UID", sb.RunID, pod.UID)
	}
	if pod.Spec.ServiceAccountName != kubeenv.SandboxSA || pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Errorf("pod service account %q, automount %v", pod.Spec.ServiceAccountName, pod.Spec.AutomountServiceAccountToken)
	}
	if pod.Labels[kubernetes.LabelSandboxID] != sb.ID || pod.Labels[kubernetes.LabelInstanceID] != sb.InstanceID {
		t.Errorf("pod labels %v", pod.Labels)
	}
	proj := pod.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken
	if proj.Audience != kubernetes.DefaultAudience || proj.ExpirationSeconds == nil || *proj.ExpirationSeconds != 600 {
		t.Errorf("projection %+v", proj)
	}
	if m := pod.Spec.Containers[0].VolumeMounts[0]; !m.ReadOnly || m.MountPath != guest.ServiceAccountTokenDir {
		t.Errorf("mount %+v", m)
	}
	if out := e.mustCLI("sandbox", "exec", "web", "--", "/busybox", "echo", "hello from the pod"); strings.TrimSpace(out) != "hello from the pod" {
		t.Errorf("exec output %q", out)
	}
	// The sandkey token lives in the supervisor's memory only.
	if out, err := e.cli("sandbox", "exec", "web", "--", "/busybox", "ls", "/run/sandkey"); err != nil || strings.TrimSpace(out) != "k8s-sa" {
		t.Errorf("/run/sandkey holds %q (%v); want the projected token directory only", out, err)
	}
	if n := e.exchanges(session.ExchangeOK); n < 1 {
		t.Errorf("sandkey_exchange_total{result=ok} = %v, want at least 1", n)
	}
}

// Acceptance 5: each bad credential is refused with its reason counted,
// and nothing is minted.
func TestExchangeRefusesEveryBadCredentialWithItsReason(t *testing.T) {
	e := newEnv(t)
	sb := e.create("target")
	e.awaitConnected("target")
	pod := e.pod("target")
	ctx := context.Background()
	client := e.c.Client()
	exp := int64(600)
	request := func(sa, audience string, bound *corev1.Pod) string {
		t.Helper()
		tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp}}
		if bound != nil {
			tr.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: bound.Name, UID: bound.UID}
		}
		got, err := client.CoreV1().ServiceAccounts(e.ns).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got.Status.Token
	}
	e.c.ServiceAccount(t, e.ns, "other")
	// A decoy pod of the sandbox ServiceAccount that is no run of the sandbox
	// (no node: it stays Pending).
	decoy := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "decoy"}, Spec: corev1.PodSpec{
		ServiceAccountName: kubeenv.SandboxSA, AutomountServiceAccountToken: new(false), NodeName: "nowhere",
		Containers: []corev1.Container{{Name: "c", Image: imageRef}}}}
	decoy, err := client.CoreV1().Pods(e.ns).Create(ctx, decoy, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	t.Cleanup(func() { // no kubelet would confirm its deletion
		client.CoreV1().Pods(e.ns).Delete(context.Background(), "decoy", metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	minted := e.metric("sandkey_tokens_minted_total", `{reason="exchange"}`)

	cases := []struct {
		name, token, reason string
		code                codes.Code
	}{
		{"wrong audience", request(kubeenv.SandboxSA, "someone-else", pod), session.ExchangeWrongAudience, codes.Unauthenticated},
		{"another ServiceAccount", request("other", kubernetes.DefaultAudience, nil), session.ExchangeWrongAccount, codes.Unauthenticated},
		{"not bound to a pod", request(kubeenv.SandboxSA, kubernetes.DefaultAudience, nil), session.ExchangeNotBound, codes.Unauthenticated},
		{"bound to another pod", request(kubeenv.SandboxSA, kubernetes.DefaultAudience, decoy), session.ExchangeNotCurrentRun, codes.Unauthenticated},
		{"garbage", "not.a.token", session.ExchangeNotAuthenticated, codes.Unauthenticated},
		{"1 MB", strings.Repeat("A", 1_000_000), session.ExchangeTooLarge, codes.InvalidArgument},
		{"expired", expired(t, e.c.Dir(), request(kubeenv.SandboxSA, kubernetes.DefaultAudience, pod)), session.ExchangeExpired, codes.Unauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.exchanges(tc.reason)
			_, err := e.exchange(sb.ID, tc.token)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("exchange: %v; want %s (%s)", err, tc.code, tc.reason)
			}
			if after := e.exchanges(tc.reason); after != before+1 {
				t.Errorf("sandkey_exchange_total{result=%q} went %v -> %v, want +1", tc.reason, before, after)
			}
		})
	}

	// A pod deleted and recreated under the same name (new UID): its old
	// token, which TokenReview has just accepted (and so caches for ~10 s),
	// is refused by the live pod's UID.
	old := request(kubeenv.SandboxSA, kubernetes.DefaultAudience, decoy)
	if _, err := e.exchange(sb.ID, old); err == nil || !strings.Contains(err.Error(), session.ExchangeNotCurrentRun) {
		t.Fatalf("decoy's token: %v; want %s", err, session.ExchangeNotCurrentRun)
	}
	if err := client.CoreV1().Pods(e.ns).Delete(ctx, "decoy", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	decoy.ObjectMeta = metav1.ObjectMeta{Name: "decoy"}
	if _, err := client.CoreV1().Pods(e.ns).Create(ctx, decoy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	recreated := time.Now()
	_, err = e.exchange(sb.ID, old)
	if !strings.Contains(fmt.Sprint(err), session.ExchangePodUID) {
		t.Errorf("token of a recreated pod, %s after: %v; want %s", time.Since(recreated).Round(time.Millisecond), err, session.ExchangePodUID)
	}
	if after := e.metric("sandkey_tokens_minted_total", `{reason="exchange"}`); after != minted {
		t.Errorf("refused exchanges minted %v tokens", after-minted)
	}
}

// Acceptance 4: after sandbox delete, the pod's last projected token
// (unexpired, and inside TokenReview's cache window) is refused. A stopped
// sandbox's token is refused by the live-pod check.
func TestDeletedSandboxsProjectedTokenIsRefused(t *testing.T) {
	e := newEnv(t)
	a := e.create("stopped")
	b := e.create("deleted")
	e.awaitConnected("stopped")
	e.awaitConnected("deleted")
	tokA, tokB := e.projectedToken("stopped"), e.projectedToken("deleted")

	e.mustCLI("sandbox", "stop", "stopped")
	stoppedAt := time.Now()
	_, err := e.exchange(a.ID, tokA)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), session.ExchangePodGone) {
		t.Errorf("token of a stopped sandbox's deleted pod: %v; want %s", err, session.ExchangePodGone)
	}
	t.Logf("refused %s after the pod's deletion (TokenReview caches successes ~10 s): %v", time.Since(stoppedAt).Round(time.Millisecond), err)

	e.mustCLI("sandbox", "delete", "deleted")
	if _, err := e.c.Client().CoreV1().Pods(e.ns).Get(context.Background(), kubernetes.PodName(b.ID, b.InstanceID), metav1.GetOptions{}); err == nil {
		t.Errorf("pod of the deleted sandbox still exists")
	}
	if _, err := e.exchange(b.ID, tokB); status.Code(err) != codes.NotFound {
		t.Errorf("token of a deleted sandbox: %v; want NotFound (%s)", err, session.ExchangeUnknownSandbox)
	}
}

// expired re-signs a real projected token with the cluster's own
// ServiceAccount signing key, its times moved an hour into the past: a
// projected token exactly as the API server issued it, but expired (the
// API issues none shorter than 600 s, too long to wait for).
func expired(t *testing.T, clusterDir, raw string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(clusterDir, "pki", "sa.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	parsed, _, err := jwt.NewParser().ParseUnverified(raw, claims)
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour).Unix()
	claims["iat"], claims["nbf"], claims["exp"] = past-600, past-600, past
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = parsed.Header["kid"]
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// Acceptance 3: the gateway stopped past the sandkey token's expiry and
// started again: the supervisor re-exchanges and registers at once.
func TestGatewayRestartPastExpiryReexchanges(t *testing.T) {
	e := newEnv(t)
	e.create("kept")
	e.awaitConnected("kept")
	e.stopGateway()
	stopped := time.Now()
	// Every sandkey token the supervisor holds has expired by now.
	time.Sleep(time.Until(stopped.Add(kubeenv.Lifetime + time.Second)))

	e.startGateway()
	ready := time.Now()
	e.eventually("kept re-registered", 5*time.Second, func() bool { return e.get("kept").Connected })
	t.Logf("re-registered %s after the gateway was ready (down %s)", time.Since(ready).Round(time.Millisecond), ready.Sub(stopped).Round(time.Millisecond))
	if n := e.exchanges(session.ExchangeOK); n < 1 {
		t.Errorf("no exchange after the restart: the supervisor must re-exchange its expired token")
	}
}

// Acceptance 7: at start, the gateway reconciles pods by label: a pod
// deleted behind its back (kubectl delete pod) marks its sandbox stopped,
// and a labelled pod of no sandbox is reported.
func TestGatewayStartReconcilesPodsByLabel(t *testing.T) {
	e := newEnv(t)
	e.create("killed")
	e.awaitConnected("killed")
	killed := e.pod("killed")
	e.stopGateway()

	ctx := context.Background()
	pods := e.c.Client().CoreV1().Pods(e.ns)
	if err := pods.Delete(ctx, killed.Name, metav1.DeleteOptions{}); err != nil { // kubectl delete pod
		t.Fatal(err)
	}
	stray := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "stray", Labels: map[string]string{
		kubernetes.LabelManagedBy: kubernetes.ManagedBy, kubernetes.LabelSandboxID: "0000000000000000000000000000dead"}},
		Spec: corev1.PodSpec{ServiceAccountName: kubeenv.SandboxSA, AutomountServiceAccountToken: new(false), NodeName: "nowhere",
			Containers: []corev1.Container{{Name: "c", Image: imageRef}}}}
	if _, err := pods.Create(ctx, stray, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	t.Cleanup(func() { pods.Delete(context.Background(), "stray", metav1.DeleteOptions{GracePeriodSeconds: &zero}) })
	e.eventually("killed pod gone", kubeenv.Bound, func() bool {
		_, err := pods.Get(ctx, killed.Name, metav1.GetOptions{})
		return err != nil
	})

	e.startGateway()
	if st := e.get("killed").State; st != "stopped" {
		t.Errorf("sandbox whose pod was deleted while the gateway was down is %q, want stopped", st)
	}
	log, _ := os.ReadFile(filepath.Join(e.dir, "gateway.log"))
	if !strings.Contains(string(log), "a run of no known sandbox") || !strings.Contains(string(log), "stray") {
		t.Errorf("the stray labelled pod was not reported in the gateway's log")
	}
}

// Acceptance 6: with the API server down, the exchange answers
// Unavailable and mints nothing, while live sessions go on getting their
// rotations; once it is back, the exchange works again.
func TestAPIServerDownMakesTheExchangeUnavailableButSessionsGoOn(t *testing.T) {
	e := newEnv(t)
	sb := e.create("live")
	e.awaitConnected("live")
	projected := e.projectedToken("live")

	e.c.StopAPIServer(t)
	_, err := e.exchange(sb.ID, projected)
	if status.Code(err) != codes.Unavailable {
		t.Errorf("exchange with the API server down: %v; want Unavailable", err)
	}
	if n := e.exchanges(session.ExchangeUnavailable); n < 1 {
		t.Errorf("sandkey_exchange_total{result=unavailable} = %v", n)
	}
	delivered := e.get("live").DeliveredGen
	e.eventually("a rotation delivered while the API server is down", 3*kubeenv.Lifetime, func() bool {
		v := e.get("live")
		return v.Connected && v.DeliveredGen > delivered
	})

	e.c.StartAPIServer(t)
	e.eventually("the exchange works again", kubeenv.Bound, func() bool {
		_, err := e.exchange(sb.ID, projected)
		return err == nil
	})
}
