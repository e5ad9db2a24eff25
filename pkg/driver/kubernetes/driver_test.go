package kubernetes

// Unit tests over client-go's fake clientset (a fake, named as one: the
// end-to-end tests in test/k8se2e run the same paths on a real API
// server and kubelet).

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/session"
)

const (
	testNS  = "sandboxes"
	testSA  = "sandbox-sa"
	testAud = "sandkey-test"
	testSB  = "0123456789abcdef0123456789abcdef"
)

func newFakeDriver(t *testing.T, objs ...runtime.Object) (*Driver, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	d, err := New(context.Background(), Config{Client: cs, Namespace: testNS, ServiceAccount: testSA,
		Audience: testAud, Gateway: "tls://10.88.0.1:7443", GatewayCA: []byte("PEM")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, cs
}

func testSpec(instance string) driver.Spec {
	return driver.Spec{SandboxID: testSB, InstanceID: instance, Image: "example/sb:1", Command: []string{"sleep", "60"},
		Env:        map[string]string{"FOO": "bar", "SANDKEY_GATEWAY": "unix:///evil"},
		SandboxEnv: map[string]string{guest.EnvAuthMode: "dir", guest.EnvSandboxID: testSB, guest.EnvInstanceID: instance}}
}

func TestStartRunCreatesAPodWithTheProjectedTokenAndNoAPIToken(t *testing.T) {
	d, cs := newFakeDriver(t)
	uidRun := "uid-1"
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		p.UID = types.UID(uidRun)
		return false, nil, nil
	})
	run, err := d.StartRun(context.Background(), testSpec("aaaa"))
	if err != nil {
		t.Fatal(err)
	}
	if run != uidRun {
		t.Fatalf("run id %q, want the pod's uid %q", run, uidRun)
	}
	pod, err := cs.CoreV1().Pods(testNS).Get(context.Background(), PodName(testSB, "aaaa"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Labels[LabelSandboxID] != testSB || pod.Labels[LabelInstanceID] != "aaaa" || pod.Labels[LabelManagedBy] != ManagedBy {
		t.Errorf("labels %v", pod.Labels)
	}
	if pod.Spec.ServiceAccountName != testSA || pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Errorf("service account %q automount %v: want %q and false", pod.Spec.ServiceAccountName, pod.Spec.AutomountServiceAccountToken, testSA)
	}
	c := pod.Spec.Containers[0]
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != guest.ServiceAccountTokenDir || !c.VolumeMounts[0].ReadOnly {
		t.Errorf("mounts %+v: want the token volume read-only at %s", c.VolumeMounts, guest.ServiceAccountTokenDir)
	}
	p := pod.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken
	if p.Audience != testAud || *p.ExpirationSeconds != DefaultExpirationSeconds || p.Path != guest.ServiceAccountTokenFile {
		t.Errorf("projection %+v", p)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	want := map[string]string{guest.EnvAuthMode: "k8s-sa", guest.EnvGateway: "tls://10.88.0.1:7443", guest.EnvGatewayCA: "PEM",
		guest.EnvTokenDir: guest.ServiceAccountTokenDir, guest.EnvSandboxID: testSB, "FOO": "bar"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	if strings.Join(c.Args, " ") != "sleep 60" {
		t.Errorf("args %v", c.Args)
	}
}

func TestStatusComesFromThePodAndNoPodIsStopped(t *testing.T) {
	d, cs := newFakeDriver(t)
	st, err := d.Status(context.Background(), testSB)
	if err != nil || st.State != driver.StateStopped {
		t.Fatalf("no pod: %+v %v, want stopped", st, err)
	}
	if _, err := d.StartRun(context.Background(), testSpec("bbbb")); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, driver.StateRunning, "pod")
	pod, _ := cs.CoreV1().Pods(testNS).Get(context.Background(), PodName(testSB, "bbbb"), metav1.GetOptions{})
	pod.Status.Phase = corev1.PodFailed
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3}}}}
	if _, err := cs.CoreV1().Pods(testNS).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	st = waitState(t, d, driver.StateStopped, "pod")
	if !st.Exited || st.ExitCode != 3 || st.InstanceID != "bbbb" {
		t.Errorf("status %+v: want exit code 3 of instance bbbb", st)
	}
	if err := d.Stop(context.Background(), testSB, time.Second); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, driver.StateStopped, "no pod")
	if list, _ := cs.CoreV1().Pods(testNS).List(context.Background(), metav1.ListOptions{}); len(list.Items) != 0 {
		t.Errorf("pods left after stop: %d", len(list.Items))
	}
}

// waitState waits until the informer shows the sandbox in state want
// with the given detail prefix.
func waitState(t *testing.T, d *Driver, want driver.State, detail string) driver.Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := d.Status(context.Background(), testSB)
		if err == nil && st.State == want && strings.HasPrefix(st.Detail, detail) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v %v, want %s (%s...)", st, err, want, detail)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// review makes the fake TokenReview answer with st.
func review(cs *fake.Clientset, st authnv1.TokenReviewStatus, err error) {
	cs.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		if err != nil {
			return true, nil, err
		}
		return true, &authnv1.TokenReview{Status: st}, nil
	})
}

func boundStatus(user, pod, uid string) authnv1.TokenReviewStatus {
	return authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{testAud}, User: authnv1.UserInfo{
		Username: user,
		Extra:    map[string]authnv1.ExtraValue{extraPodName: {pod}, extraPodUID: {uid}},
	}}
}

func livePod(name, uid string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, UID: types.UID(uid),
		Labels: map[string]string{LabelManagedBy: ManagedBy, LabelSandboxID: testSB}}}
}

func unsignedToken(aud string, exp time.Time) string {
	tok := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{Audience: jwt.ClaimStrings{aud}, ExpiresAt: jwt.NewNumericDate(exp)})
	s, _ := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
	return s
}

func TestVerifyCredentialRefusesAtTheFirstFailingCheck(t *testing.T) {
	user := ServiceAccountUser(testNS, testSA)
	cases := []struct {
		name   string
		status authnv1.TokenReviewStatus
		apiErr error
		pods   []runtime.Object
		token  string
		want   string // reason; "" = accepted
	}{
		{name: "accepted", status: boundStatus(user, "p", "u1"), pods: []runtime.Object{livePod("p", "u1")}},
		{name: "api down", apiErr: errors.New("connection refused"), want: session.ExchangeUnavailable},
		{name: "garbage", status: authnv1.TokenReviewStatus{Error: "invalid bearer token"}, token: "garbage", want: session.ExchangeNotAuthenticated},
		{name: "wrong audience", status: authnv1.TokenReviewStatus{Error: "token audiences invalid"},
			token: unsignedToken("other", time.Now().Add(time.Hour)), want: session.ExchangeWrongAudience},
		{name: "expired", status: authnv1.TokenReviewStatus{Error: "token expired"},
			token: unsignedToken(testAud, time.Now().Add(-time.Hour)), want: session.ExchangeExpired},
		{name: "audience not echoed", status: func() authnv1.TokenReviewStatus {
			s := boundStatus(user, "p", "u1")
			s.Audiences = []string{"other"}
			return s
		}(), want: session.ExchangeWrongAudience},
		{name: "other service account", status: boundStatus(ServiceAccountUser(testNS, "default"), "p", "u1"), want: session.ExchangeWrongAccount},
		{name: "not bound to a pod", status: func() authnv1.TokenReviewStatus {
			s := boundStatus(user, "p", "u1")
			delete(s.User.Extra, extraPodUID)
			return s
		}(), want: session.ExchangeNotBound},
		{name: "pod gone", status: boundStatus(user, "p", "u1"), want: session.ExchangePodGone},
		{name: "pod recreated under the same name", status: boundStatus(user, "p", "u1"), pods: []runtime.Object{livePod("p", "u2")}, want: session.ExchangePodUID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, cs := newFakeDriver(t, tc.pods...)
			review(cs, tc.status, tc.apiErr)
			token := tc.token
			if token == "" {
				token = "projected"
			}
			run, err := d.VerifyCredential(context.Background(), testSB, token)
			if tc.want == "" {
				if err != nil || run != "u1" {
					t.Fatalf("VerifyCredential = %q, %v; want u1", run, err)
				}
				return
			}
			var r *session.ExchangeRefusal
			switch {
			case tc.want == session.ExchangeUnavailable:
				if !errors.Is(err, session.ErrExchangeUnavailable) {
					t.Fatalf("err %v, want unavailable", err)
				}
			case !errors.As(err, &r) || r.Reason != tc.want:
				t.Fatalf("err %v, want refusal %s", err, tc.want)
			}
		})
	}
}

func TestReviewAsksForTheGatewaysAudience(t *testing.T) {
	d, cs := newFakeDriver(t)
	var asked authnv1.TokenReviewSpec
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		asked = a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).Spec
		return true, &authnv1.TokenReview{}, nil
	})
	d.Review(context.Background(), "tok")
	if asked.Token != "tok" || len(asked.Audiences) != 1 || asked.Audiences[0] != testAud {
		t.Errorf("TokenReview spec %+v: want the token and audiences [%s]", asked, testAud)
	}
}

func TestNewRefusesBadSettings(t *testing.T) {
	cs := fake.NewClientset()
	for name, cfg := range map[string]Config{
		"plaintext gateway": {Client: cs, Gateway: "tcp://1.2.3.4:1"},
		"short expiry":      {Client: cs, Gateway: "tls://h:1", ExpirationSeconds: 60},
		"pull policy":       {Client: cs, Gateway: "tls://h:1", PullPolicy: "Sometimes"},
		"no client":         {Gateway: "tls://h:1"},
	} {
		if _, err := New(context.Background(), cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}
