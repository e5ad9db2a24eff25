package gatewaycmd

import (
	"github.com/spf13/pflag"

	"github.com/sandkey/sandkey/pkg/admin"
)

// addPeerFlags adds the flags of calls between replicas.
func addPeerFlags(f *pflag.FlagSet, o *serveOptions) {
	f.StringVar(&o.peerCA, "peer-ca", "", "PEM bundle of the CAs that sign the other replicas' --admin-tcp certificates, verified (with their host names) when forwarding to them; default: a peer must present exactly this gateway's own --admin-tls-cert")
}

// peerOptions are the operator API's options for forwarding calls to the
// replica holding a session: with --admin-tcp, replicas call each other
// there with the operator token, trusting --peer-ca or this gateway's own
// certificate. Call closePeers once the operator API servers have
// stopped. The peers are not dialed before a call needs one.
func peerOptions(o *serveOptions) (opts []admin.Option, closePeers func(), err error) {
	if o.adminTCP == "" && o.peerCA != "" {
		return nil, nil, Usagef("--peer-ca verifies the replicas' operator APIs, which they call on --admin-tcp: set --admin-tcp with its certificate and token too")
	}
	if o.adminTCP == "" || o.adminCert == "" || o.adminKey == "" || o.adminTokenFile == "" {
		// Without a complete --admin-tcp there are no peers to call; the
		// TCP listener refuses an incomplete one, naming what it lacks.
		return nil, func() {}, nil
	}
	peers, err := admin.NewPeers(admin.PeerConfig{TokenFile: o.adminTokenFile, CAFile: o.peerCA, PinFile: o.adminCert})
	if err != nil {
		return nil, nil, Usagef("%v", err)
	}
	return []admin.Option{admin.WithPeers(peers)}, func() { peers.Close() }, nil
}
