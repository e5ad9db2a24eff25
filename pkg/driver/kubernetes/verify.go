package kubernetes

import (
	"context"

	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sandkey/sandkey/pkg/session"
)

// The keys of a bound ServiceAccount token's user.extra in a TokenReview.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
	// extraCredentialID names the token itself ("JTI=<uuid>"): logged, so
	// an operator can tell which projected token an exchange presented.
	extraCredentialID = "authentication.kubernetes.io/credential-id"
)

// Identity is what a projected token proved: the pod it is bound to.
type Identity struct {
	PodName      string
	PodUID       string
	CredentialID string
}

// ServiceAccountUser is the TokenReview username of a ServiceAccount.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// VerifyCredential implements driver.CredentialVerifier: Review, then
// the live pod, whose UID is the run the token is bound to.
func (d *Driver) VerifyCredential(ctx context.Context, sandboxID, credential string) (string, error) {
	id, err := d.Review(ctx, credential)
	if err != nil {
		return "", err
	}
	if err := d.checkLivePod(ctx, id); err != nil {
		return "", err
	}
	d.log.Debug("projected token verified", zapIdentity(sandboxID, id)...)
	return id.PodUID, nil
}

// Review asks the API server's TokenReview about a projected token and
// checks its answer, refusing at the first check that fails: authenticated
// for the driver's audience (echoed back), the sandboxes' ServiceAccount,
// bound to exactly one pod.
func (d *Driver) Review(ctx context.Context, credential string) (Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	review, err := d.cfg.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: credential, Audiences: []string{d.cfg.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return Identity{}, unavailable("TokenReview", err)
	}
	st := review.Status
	if !st.Authenticated {
		return Identity{}, d.whyUnauthenticated(credential, st.Error)
	}
	if !slices.Contains(st.Audiences, d.cfg.Audience) {
		return Identity{}, session.RefuseExchange(session.ExchangeWrongAudience,
			"TokenReview authenticated the token for audiences %v, not %q", st.Audiences, d.cfg.Audience)
	}
	if want := ServiceAccountUser(d.cfg.Namespace, d.cfg.ServiceAccount); st.User.Username != want {
		return Identity{}, session.RefuseExchange(session.ExchangeWrongAccount,
			"token of %q; sandboxes run as %q", st.User.Username, want)
	}
	names, uids := st.User.Extra[extraPodName], st.User.Extra[extraPodUID]
	if len(names) != 1 || len(uids) != 1 || names[0] == "" || uids[0] == "" {
		return Identity{}, session.RefuseExchange(session.ExchangeNotBound,
			"token names %d pod(s) and %d pod uid(s); want a token bound to one pod", len(names), len(uids))
	}
	id := Identity{PodName: names[0], PodUID: uids[0]}
	if c := st.User.Extra[extraCredentialID]; len(c) == 1 {
		id.CredentialID = c[0]
	}
	return id, nil
}

// whyUnauthenticated names the reason TokenReview refused a token. The
// API server's message is free text: the reason comes from the token's
// own unverified claims, read only to say why it was refused.
func (d *Driver) whyUnauthenticated(credential, apiErr string) error {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(credential, &claims); err == nil {
		if !slices.Contains(claims.Audience, d.cfg.Audience) {
			return session.RefuseExchange(session.ExchangeWrongAudience,
				"token for audiences %v, not %q (TokenReview: %s)", []string(claims.Audience), d.cfg.Audience, apiErr)
		}
		if claims.ExpiresAt != nil && time.Now().After(claims.ExpiresAt.Time) {
			return session.RefuseExchange(session.ExchangeExpired,
				"token expired at %s (TokenReview: %s)", claims.ExpiresAt.Time.UTC().Format(time.RFC3339), apiErr)
		}
	}
	return session.RefuseExchange(session.ExchangeNotAuthenticated, "TokenReview: %s", apiErr)
}

// checkLivePod asks the API server (not the informer, which may lag a
// deletion) for the pod the token is bound to: it must exist, not be
// terminating, have the token's UID, and be one of the driver's pods.
func (d *Driver) checkLivePod(ctx context.Context, id Identity) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	pod, err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).Get(ctx, id.PodName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return session.RefuseExchange(session.ExchangePodGone, "pod %s (uid %s) no longer exists", id.PodName, id.PodUID)
	case err != nil:
		return unavailable("get pod "+id.PodName, err)
	case string(pod.UID) != id.PodUID:
		return session.RefuseExchange(session.ExchangePodUID,
			"token bound to pod %s uid %s; the pod of that name now has uid %s", id.PodName, id.PodUID, pod.UID)
	case pod.DeletionTimestamp != nil:
		return session.RefuseExchange(session.ExchangePodGone, "pod %s (uid %s) is being deleted", id.PodName, id.PodUID)
	case pod.Labels[LabelManagedBy] != ManagedBy:
		return session.RefuseExchange(session.ExchangeNotCurrentRun, "pod %s is not a sandkey sandbox", id.PodName)
	}
	return nil
}

// unavailable wraps an API failure: the exchange cannot decide now.
// Forbidden means the gateway's own RBAC is missing: say what to grant.
func unavailable(op string, err error) error {
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		err = fmt.Errorf("%w (the gateway's ServiceAccount needs system:auth-delegator and get on pods; see deploy/kubernetes)", err)
	}
	return fmt.Errorf("%s: %w: %w", op, session.ErrExchangeUnavailable, err)
}

func zapIdentity(sandboxID string, id Identity) []zap.Field {
	return []zap.Field{zap.String("sandbox", sandboxID), zap.String("pod", id.PodName),
		zap.String("pod_uid", id.PodUID), zap.String("credential_id", id.CredentialID)}
}
