package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/sandkey/sandkey/pkg/atomicfile"
	"github.com/sandkey/sandkey/pkg/auth"
)

// How the supervisor notices changes, as its status file says.
const (
	WatchInotify = "inotify" // change notifications, polls as a safety net
	WatchPoll    = "poll"    // no inotify instance: short polls only
)

// Status is what the supervisor tells the workload and operators about
// its credential and session. It never holds the token.
type Status struct {
	SandboxID    string    `json:"sandbox_id"`
	Gen          uint64    `json:"gen"`
	JTI          string    `json:"jti,omitempty"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	Connected    bool      `json:"connected"`
	SessionID    string    `json:"session_id,omitempty"`
	LastError    string    `json:"last_error,omitempty"`
	UpdatedAt    time.Time `json:"updated_at"`
	WorkloadPID  int       `json:"workload_pid,omitempty"`
	TokenExpired bool      `json:"token_expired"`
	// Watch says how changes are noticed: WatchInotify, or WatchPoll when
	// the supervisor could not get an inotify instance.
	Watch string `json:"watch,omitempty"`
	// Degraded says why, when the supervisor works in a degraded mode.
	Degraded string `json:"degraded,omitempty"`
}

// setToken shows tok (nil: none) as it stands at now, the time of the
// status.
func (st *Status) setToken(tok *auth.Token, now time.Time) {
	st.UpdatedAt = now.UTC()
	st.Gen, st.JTI, st.ExpiresAt, st.TokenExpired = 0, "", time.Time{}, false
	if tok != nil {
		st.Gen, st.JTI, st.ExpiresAt = tok.Gen(), tok.JTI(), tok.ExpiresAt().UTC()
		st.TokenExpired = !now.Before(tok.ExpiresAt())
	}
}

// setSession shows the session's state, as session.Client.State gives it.
func (st *Status) setSession(connected bool, sessionID string, lastErr error) {
	st.Connected, st.SessionID, st.LastError = connected, sessionID, ""
	if lastErr != nil {
		st.LastError = lastErr.Error()
	}
}

// setWatch shows how changes are noticed: by inotify, or by polling when
// degraded says why ("" when not degraded).
func (st *Status) setWatch(degraded string) {
	st.Watch, st.Degraded = WatchInotify, degraded
	if degraded != "" {
		st.Watch = WatchPoll
	}
}

// writeStatus replaces the status file atomically (temp file + rename), so
// a reader never sees half of it. It is 0644: it holds nothing secret.
func writeStatus(path string, st Status) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	return nil
}

// ReadStatus reads a status file.
func ReadStatus(path string) (Status, error) {
	var st Status
	data, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("status file %s: %w", path, err)
	}
	return st, nil
}
