package store

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// The channels other replicas hear commits on (Postgres NOTIFY).
const (
	// ChannelGenerations carries "<sandbox id> <gen>" for each generation
	// NextGenerations commits, and "<sandbox id> 0" when DeleteSandbox
	// removes a sandbox.
	ChannelGenerations = "sandkey_generations"
	// ChannelKeys carries the kid of each key InsertKey, ActivateKey or
	// RetireKey changed.
	ChannelKeys = "sandkey_keys"
)

// Events receives what Listen hears. Its methods run on Listen's goroutine,
// one at a time; a slow method delays the next notification, so hand long
// work to another goroutine.
type Events interface {
	// Generation: gen of sandboxID was committed (by any replica, this one
	// included); gen 0: the sandbox was deleted.
	Generation(sandboxID string, gen uint64)
	// KeysChanged: a signing key was inserted, activated or retired.
	KeysChanged()
	// Resync: Listen (re)connected; notifications sent while it was not
	// listening are lost, so catch up from the store.
	Resync()
}

// Listen delivers the commits of every replica to ev until ctx ends, and
// then returns nil. On Postgres it holds a dedicated connection LISTENing
// on ChannelGenerations and ChannelKeys, reconnects with backoff when the
// connection is lost, and calls ev.Resync after every (re)connect, once
// LISTEN is in place: nothing committed while it was away goes unseen. An
// SQLite store has one gateway and nothing to hear: Listen waits for ctx.
func (s *Store) Listen(ctx context.Context, ev Events) error {
	if s.pgConfig == nil {
		<-ctx.Done()
		return nil
	}
	backoff := listenBackoffMin
	for {
		connected, err := s.listenOnce(ctx, ev)
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			backoff = listenBackoffMin
		}
		s.log.Warn("store listener lost its connection; reconnecting",
			zap.Duration("after", backoff), zap.Error(err))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// Listen's reconnection backoff doubles from min to max.
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
)

// listenOnce connects, listens and dispatches until the connection fails
// or ctx ends; connected reports that LISTEN was in place.
func (s *Store) listenOnce(ctx context.Context, ev Events) (connected bool, err error) {
	cfg := s.pgConfig.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = s.listenName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Close(closeCtx) //nolint:errcheck // the connection is being dropped
	}()
	for _, ch := range []string{ChannelGenerations, ChannelKeys} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return false, err
		}
	}
	s.log.Debug("store listener connected")
	ev.Resync()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		switch n.Channel {
		case ChannelKeys:
			ev.KeysChanged()
		case ChannelGenerations:
			id, genText, ok := strings.Cut(n.Payload, " ")
			gen, err := strconv.ParseUint(genText, 10, 64)
			if !ok || err != nil {
				s.log.Warn("ignoring a malformed generation notification", zap.String("payload", n.Payload))
				continue
			}
			ev.Generation(id, gen)
		}
	}
}
