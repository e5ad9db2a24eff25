package gateway

import "context"

// Holder names the gateway replica that holds a sandbox's session, so
// that the operator API can forward a call for that session to it.
type Holder struct {
	// ReplicaID is the holding replica's id; this gateway's own id when
	// the session is here or nowhere.
	ReplicaID string
	// AdminAddr is the holding replica's operator API (TLS), as it
	// advertises it; empty when Local.
	AdminAddr string
	// Local is true when this gateway holds the session, or when no
	// replica does (the call is then answered here, as "not connected").
	Local bool
	// Connected is true when a live session exists on some replica.
	Connected bool
}

// SessionHolder says which replica holds the session of a sandbox. A
// single gateway holds every session itself.
func (g *Gateway) SessionHolder(_ context.Context, sandboxID string) (Holder, error) {
	return Holder{ReplicaID: g.replicaID, Local: true, Connected: g.sessions.Connected(sandboxID)}, nil
}

// ReplicaID is this gateway process's id among the replicas sharing its
// store: random, new at every start.
func (g *Gateway) ReplicaID() string { return g.replicaID }
