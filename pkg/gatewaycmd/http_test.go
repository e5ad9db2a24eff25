package gatewaycmd

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestJWKSIsServedWithTheMaxAgeKeysArePublishedAhead(t *testing.T) {
	clearAdminEnv(t)
	tg := startTestGateway(t)
	h := newHTTPServer(tg.gw, prometheus.NewRegistry()).Handler
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/jwks.json", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "max-age=60" || !strings.Contains(rec.Body.String(), `"keys"`) {
		t.Fatalf("/jwks.json: %d, Cache-Control %q, body %q; want 200 with max-age=60 (the default --jwks-max-age)",
			rec.Code, rec.Header().Get("Cache-Control"), rec.Body.String())
	}
	if tg.gw.JWKSMaxAge() > tg.gw.KeyPublishDelay() {
		t.Fatalf("max-age %s exceeds the key publish delay %s", tg.gw.JWKSMaxAge(), tg.gw.KeyPublishDelay())
	}
}
