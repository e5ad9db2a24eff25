package bearer

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/credentials"
)

var _ credentials.PerRPCCredentials = Credentials{}

func TestCredentialsSendTheCurrentToken(t *testing.T) {
	tok := "one"
	c := Credentials{Token: func() (string, error) { return tok, nil }}
	for _, want := range []string{"one", "two"} {
		tok = want
		md, err := c.GetRequestMetadata(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := md["authorization"]; got != "Bearer "+want {
			t.Errorf("authorization = %q, want Bearer %s", got, want)
		}
	}
}

func TestCredentialsFailTheCallWithTheTokensError(t *testing.T) {
	none := errors.New("no token yet")
	c := Credentials{Token: func() (string, error) { return "", none }}
	if _, err := c.GetRequestMetadata(context.Background()); !errors.Is(err, none) {
		t.Errorf("err = %v, want %v", err, none)
	}
}

func TestCredentialsRequireTLSOnlyWhenAsked(t *testing.T) {
	if (Credentials{Token: Fixed("x")}).RequireTransportSecurity() {
		t.Error("insecure transport refused without RequireTLS")
	}
	if !(Credentials{Token: Fixed("x"), RequireTLS: true}).RequireTransportSecurity() {
		t.Error("RequireTLS not reported")
	}
}
