package session

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/session/sessionpb"
)

// stubExchanger is a stand-in for the gateway: it mints for "good" and
// counts its calls.
type stubExchanger struct {
	issuer *auth.Issuer
	calls  int
}

func (x *stubExchanger) Exchange(_ context.Context, sandboxID, credential string) (*auth.Token, error) {
	x.calls++
	if credential != "good" {
		return nil, RefuseExchange(ExchangePodGone, "no such pod")
	}
	return x.issuer.Mint(sandboxID, 1)
}

func TestExchangeRPCRefusesAttestedOversizedAndMalformedCallsBeforeTheExchanger(t *testing.T) {
	key, err := auth.GenerateKey(rand.Reader, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keys := auth.NewKeySet(key)
	issuer, err := auth.NewIssuer(auth.IssuerConfig{Keys: keys, Issuer: "gw", Audience: "sandkey", TrustDomain: "t", Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	x := &stubExchanger{issuer: issuer}
	reg := prometheus.NewRegistry()
	s := NewServer(ServerConfig{Authority: NewTestAuthority(issuer, keys), Exchanger: x, Registerer: reg})
	defer s.Close()
	for _, r := range ExchangeResults {
		if n := testutil.ToFloat64(s.metrics.exchanges.WithLabelValues(r)); n != 0 {
			t.Fatalf("result %s starts at %v", r, n)
		}
	}
	if got, err := testutil.GatherAndCount(reg, "sandkey_exchange_total"); err != nil || got != len(ExchangeResults) {
		t.Errorf("sandkey_exchange_total exports %d series (%v), want one per result (%d)", got, err, len(ExchangeResults))
	}
	shared := context.Background()
	attested := peer.NewContext(shared, &peer.Peer{AuthInfo: AttestedInfo{SandboxID: "sb"}})
	cases := []struct {
		name   string
		ctx    context.Context
		req    *sessionpb.ExchangeRequest
		code   codes.Code
		result string
	}{
		{"attested socket", attested, &sessionpb.ExchangeRequest{SandboxId: "sb", ServiceAccountToken: "good"}, codes.FailedPrecondition, ExchangeAttested},
		{"oversized", shared, &sessionpb.ExchangeRequest{SandboxId: "sb", ServiceAccountToken: strings.Repeat("x", MaxExchangeCredential+1)}, codes.InvalidArgument, ExchangeTooLarge},
		{"no sandbox id", shared, &sessionpb.ExchangeRequest{ServiceAccountToken: "good"}, codes.InvalidArgument, ExchangeMalformed},
		{"no credential", shared, &sessionpb.ExchangeRequest{SandboxId: "sb"}, codes.InvalidArgument, ExchangeMalformed},
	}
	for _, tc := range cases {
		before := testutil.ToFloat64(s.metrics.exchanges.WithLabelValues(tc.result))
		_, err := s.ExchangeServiceAccountToken(tc.ctx, tc.req)
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
		if n := testutil.ToFloat64(s.metrics.exchanges.WithLabelValues(tc.result)) - before; n != 1 {
			t.Errorf("%s: result %s counted %v times, want 1", tc.name, tc.result, n)
		}
	}
	if x.calls != 0 {
		t.Fatalf("the exchanger was asked %d times for calls refused before it", x.calls)
	}
	if _, err := s.ExchangeServiceAccountToken(shared, &sessionpb.ExchangeRequest{SandboxId: "sb", ServiceAccountToken: "bad"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("refused by the exchanger: %v, want Unauthenticated", err)
	}
	resp, err := s.ExchangeServiceAccountToken(shared, &sessionpb.ExchangeRequest{SandboxId: "sb", ServiceAccountToken: "good"})
	if err != nil || resp.GetToken() == "" || len(resp.GetJwks()) == 0 {
		t.Fatalf("exchange: %v %v; want a token and the JWKS", resp, err)
	}
	if n := testutil.ToFloat64(s.metrics.exchanges.WithLabelValues(ExchangeOK)); n != 1 {
		t.Errorf("ok counted %v times", n)
	}
}
