package soak

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/session/sessiontest"
	"github.com/sandkey/sandkey/pkg/store"
	"github.com/sandkey/sandkey/test/binaries"
)

// Tokens of deleted sandboxes. The gateway binary serves sessions only on
// per-sandbox sockets (no shared TCP listener), so "presented to the
// gateway" takes every form the binaries allow, and each must refuse:
//
//  1. the deleted sandbox's own socket: it must be gone (a dial fails); if
//     anything answers, the token is presented on it in a Hello;
//  2. a live sandbox's socket (the sandbox recreated under the same name):
//     the token as bearer with a Hello for the deleted sandbox, and with
//     a Hello for the live one;
//  3. the gateway's own verdict, the store's IsAcceptable, which decides
//     every bearer on a shared listener: checked while the gateway is
//     down, after every crash and after the soak.

// deletedToken is a token a deleted sandbox held.
type deletedToken struct {
	name, id string
	tok      *auth.Token
	socket   string
}

// tokensOf reads the current and previous generations in a sandbox's
// token directory, before it is deleted.
func tokensOf(name, id, stateDir string) []deletedToken {
	dir := binaries.TokenDir(stateDir, id)
	socket := binaries.Socket(stateDir, id)
	seen := map[uint64]bool{}
	var out []deletedToken
	add := func(raw []byte) {
		tok, err := auth.ParseUnverified(strings.TrimSpace(string(raw)))
		if err == nil && !seen[tok.Gen()] {
			seen[tok.Gen()] = true
			out = append(out, deletedToken{name: name, id: id, tok: tok, socket: socket})
		}
	}
	if raw, err := tokendir.ReadToken(dir); err == nil {
		add(raw)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "..") && !strings.HasPrefix(e.Name(), "..data") {
			if raw, err := os.ReadFile(filepath.Join(dir, e.Name(), tokendir.TokenFile)); err == nil {
				add(raw)
			}
		}
	}
	return out
}

// presentOnSockets presents d on its old socket and on a live sandbox's
// socket. It returns how many presentations were made and a description
// of each one that was accepted.
func presentOnSockets(ctx context.Context, d deletedToken, liveID, liveSocket string) (tries int, accepted []string) {
	tries++
	if _, err := os.Lstat(d.socket); err == nil {
		if c, err := net.DialTimeout("unix", d.socket, time.Second); err == nil {
			c.Close()
			if hello(ctx, d.socket, d.tok.Raw(), d.id) == nil {
				accepted = append(accepted, fmt.Sprintf("%s on its own socket, which still answers", d.tok))
			}
		}
	}
	if liveSocket == "" {
		return tries, accepted
	}
	for _, helloFor := range []string{d.id, liveID} {
		tries++
		if err := hello(ctx, liveSocket, d.tok.Raw(), helloFor); err == nil {
			accepted = append(accepted, fmt.Sprintf("%s (deleted sandbox %s) on the socket of %s, Hello for %s", d.tok, d.name, liveID, helloFor))
		}
	}
	return tries, accepted
}

// hello connects to socket with bearer and says Hello for sandboxID; nil
// means the gateway accepted the session.
func hello(ctx context.Context, socket, bearer, sandboxID string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return sessiontest.Hello(ctx, "unix://"+socket, bearer, sandboxID, "soak-deleted-token-check")
}

// verdictsInStore asks a stopped gateway's store about every token; it
// returns a description of each one it would accept.
func verdictsInStore(ctx context.Context, st *store.Store, tokens []deletedToken) (accepted []string, err error) {
	for _, d := range tokens {
		v, err := st.IsAcceptable(ctx, d.id, d.tok.Gen(), d.tok.JTI())
		if err != nil {
			return accepted, fmt.Errorf("store verdict on %s: %w", d.tok, err)
		}
		if v == store.VerdictAccepted {
			accepted = append(accepted, fmt.Sprintf("%s of deleted sandbox %s: the store says %s", d.tok, d.name, v))
		}
	}
	return accepted, nil
}
