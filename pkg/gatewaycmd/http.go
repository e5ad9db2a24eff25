package gatewaycmd

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sandkey/sandkey/pkg/gateway"
)

var errServerClosed = http.ErrServerClosed

// newHTTPServer serves the gateway's health, readiness, metrics and public
// keys. It listens on loopback by default: none of it is secret, but none
// of it is for the sandboxes either.
func newHTTPServer(gw *gateway.Gateway, reg *prometheus.Registry) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready, reason := gw.Ready(); !ready {
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
		if root := gw.TokenRoot(); !root.MemoryBacked {
			fmt.Fprintf(w, "warning: token directories at %s are on %s, not memory-backed: tokens reach the disk\n", root.Path, root.FSType)
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		// A new signing key is published at least this long before it
		// signs (--key-publish-delay), so a cache this old still verifies.
		w.Header().Set("Cache-Control", "max-age="+strconv.Itoa(int(gw.JWKSMaxAge().Seconds())))
		w.Write(gw.JWKSJSON())
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}
