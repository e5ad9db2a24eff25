package store

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeKeyFile writes contents with mode and returns its path.
func writeKeyFile(t *testing.T, contents []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.key")
	if err := os.WriteFile(path, contents, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestEncryptedKeysRoundTripAndAreNotStoredInTheClear(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		for name, keyFile := range map[string][]byte{
			"raw": bytes.Repeat([]byte{7}, 32),
			"hex": []byte(hex.EncodeToString(bytes.Repeat([]byte{9}, 32)) + "\n"),
		} {
			t.Run(name, func(t *testing.T) {
				ctx := context.Background()
				keyPath := writeKeyFile(t, keyFile, 0o600)
				dbPath := be.newLocation(t)
				s, err := Open(ctx, dbPath, Options{KeyFile: keyPath})
				if err != nil {
					t.Fatal(err)
				}
				k := insertTestKey(t, s, "k1", KeyActive)
				var stored []byte
				var encrypted int
				if err := s.reader.QueryRowContext(ctx, "SELECT private_key, encrypted FROM signing_keys WHERE kid = 'k1'").
					Scan(&stored, &encrypted); err != nil {
					t.Fatal(err)
				}
				if encrypted != 1 || bytes.Contains(stored, k.Seed) {
					t.Errorf("seed stored in the clear (encrypted=%d)", encrypted)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}

				s = openAt(t, dbPath, Options{KeyFile: keyPath})
				got, err := s.ActiveKey(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Seed, k.Seed) || !bytes.Equal(got.Public, k.Public) || got.KID != "k1" {
					t.Errorf("ActiveKey = %+v, want %+v", got, k)
				}
				msg := []byte("hello")
				if !ed25519.Verify(k.Public, msg, ed25519.Sign(got.PrivateKey(), msg)) {
					t.Error("decrypted key does not sign for its public key")
				}
			})
		}
	})
}

func TestOpenRefusesKeysItCannotDecrypt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		right := writeKeyFile(t, bytes.Repeat([]byte{1}, 32), 0o600)
		wrong := writeKeyFile(t, bytes.Repeat([]byte{2}, 32), 0o600)
		dbPath := be.newLocation(t)
		s, err := Open(ctx, dbPath, Options{KeyFile: right})
		if err != nil {
			t.Fatal(err)
		}
		insertTestKey(t, s, "k1", KeyActive)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		for name, keyFile := range map[string]string{"wrong key file": wrong, "no key file": ""} {
			t.Run(name, func(t *testing.T) {
				_, err := Open(ctx, dbPath, Options{KeyFile: keyFile})
				if !errors.Is(err, ErrWrongKeyFile) || !strings.Contains(err.Error(), "k1") {
					t.Fatalf("Open = %v, want ErrWrongKeyFile naming the key", err)
				}
				if keyFile != "" && !strings.Contains(err.Error(), keyFile) {
					t.Errorf("error %q does not name the key file", err)
				}
			})
		}
	})
}

func TestOpenRefusesBadKeyFiles(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		tests := []struct {
			name     string
			contents []byte
			mode     os.FileMode
			want     string
			kind     error
		}{
			{"group-readable", bytes.Repeat([]byte{1}, 32), 0o640, "chmod 600", ErrInsecurePermissions},
			{"too short", []byte("short"), 0o600, "want 32 raw bytes", ErrKeyFile},
			{"not hex", bytes.Repeat([]byte("z"), 64), 0o600, "want 32 raw bytes", ErrKeyFile},
			{"missing", nil, 0, "no such file", ErrKeyFile},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				keyPath := filepath.Join(t.TempDir(), "absent.key")
				if tt.contents != nil {
					keyPath = writeKeyFile(t, tt.contents, tt.mode)
				}
				_, err := Open(context.Background(), be.newLocation(t), Options{KeyFile: keyPath})
				if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), keyPath) {
					t.Errorf("Open = %v, want an error naming %s and %q", err, keyPath, tt.want)
				}
				if !errors.Is(err, tt.kind) {
					t.Errorf("Open = %v, want it to be %v", err, tt.kind)
				}
			})
		}
	})
}

func TestExactlyOneKeyIsActive(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openAt(t, be.newLocation(t), Options{})
		if _, err := s.ActiveKey(ctx); !errors.Is(err, ErrNoActiveKey) {
			t.Errorf("empty store: ActiveKey = %v, want ErrNoActiveKey", err)
		}
		insertTestKey(t, s, "k1", KeyActive)
		if err := s.InsertKey(ctx, newTestKey(t, "k2", KeyActive)); !errors.Is(err, ErrActiveKeyExists) {
			t.Errorf("second active key: %v, want ErrActiveKeyExists", err)
		}
		// The database enforces it too, whoever writes.
		_, err := s.writer.ExecContext(ctx, `INSERT INTO signing_keys (kid, private_key, public_key, encrypted, state, created_at)
		VALUES ('k9', ?, ?, 0, 'active', 0)`, []byte{0}, []byte{0})
		if !s.dialect.isUniqueViolation(err) {
			t.Errorf("raw insert of a second active key: %v, want a unique violation", err)
		}

		insertTestKey(t, s, "k2", KeyVerify)
		if err := s.ActivateKey(ctx, "k2"); err != nil {
			t.Fatal(err)
		}
		keys, err := s.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		states := map[string]KeyState{}
		for _, k := range keys {
			states[k.KID] = k.State
		}
		if states["k1"] != KeyVerify || states["k2"] != KeyActive || len(states) != 2 {
			t.Errorf("after activating k2: %v, want k1 verify, k2 active", states)
		}
		if active, err := s.ActiveKey(ctx); err != nil || active.KID != "k2" {
			t.Errorf("ActiveKey = %s, %v", active.KID, err)
		}
		if err := s.ActivateKey(ctx, "k2"); err != nil {
			t.Errorf("activating the active key: %v, want a no-op", err)
		}
		if err := s.ActivateKey(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("ActivateKey(unknown) = %v, want ErrNotFound", err)
		}
	})
}

func TestRetireKeyRules(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		retiredAt := testEpoch.Add(time.Hour)
		s := openAt(t, be.newLocation(t), Options{Now: func() time.Time { return retiredAt }})
		insertTestKey(t, s, "k1", KeyActive)
		insertTestKey(t, s, "k2", KeyVerify)

		if err := s.RetireKey(ctx, "k1"); !errors.Is(err, ErrKeyState) {
			t.Errorf("retiring the active key: %v, want ErrKeyState", err)
		}
		if err := s.RetireKey(ctx, "k2"); err != nil {
			t.Fatal(err)
		}
		if err := s.RetireKey(ctx, "k2"); err != nil {
			t.Errorf("retiring twice: %v, want a no-op", err)
		}
		if err := s.ActivateKey(ctx, "k2"); !errors.Is(err, ErrKeyState) {
			t.Errorf("activating a retired key: %v, want ErrKeyState", err)
		}
		if err := s.RetireKey(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("RetireKey(unknown) = %v, want ErrNotFound", err)
		}
		keys, err := s.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if k.KID == "k2" && (k.State != KeyRetired || !k.RetiredAt.Equal(retiredAt)) {
				t.Errorf("k2 = %s retired at %v, want retired at %v", k.State, k.RetiredAt, retiredAt)
			}
		}
	})
}

func TestInsertKeyRejectsMalformedKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		s := openAt(t, be.newLocation(t), Options{})
		good := newTestKey(t, "k", KeyVerify)
		other := newTestKey(t, "o", KeyVerify)
		tests := map[string]SigningKey{
			"empty kid":       {Seed: good.Seed, Public: good.Public, State: KeyVerify},
			"short seed":      {KID: "k", Seed: good.Seed[:16], Public: good.Public, State: KeyVerify},
			"mismatched pair": {KID: "k", Seed: good.Seed, Public: other.Public, State: KeyVerify},
			"unknown state":   {KID: "k", Seed: good.Seed, Public: good.Public, State: "spare"},
		}
		for name, k := range tests {
			if err := s.InsertKey(context.Background(), k); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v, want ErrInvalid", name, err)
			}
		}
	})
}

func TestKeysInUseListsKeysOfUnexpiredGenerations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be) // k1 active
		insertTestKey(t, s, "k2", KeyVerify)
		insertTestKey(t, s, "k3", KeyVerify) // never used
		sb := createTestSandbox(t, s, "a")
		withKID := func(kid string, issued time.Time) MintFunc {
			mint := testMint(issued)
			return func(id string, gen uint64) (Minted, error) {
				m, err := mint(id, gen)
				m.KID = kid
				return m, err
			}
		}
		// k1 signed a token that expired at epoch+1h; k2 one that expires at epoch+2h.
		if _, err := s.NextGenerations(ctx, []string{sb.ID}, withKID("k1", testEpoch)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.NextGenerations(ctx, []string{sb.ID}, withKID("k2", testEpoch.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			now  time.Time
			want string
		}{
			{testEpoch.Add(30 * time.Minute), "[k1 k2]"},
			{testEpoch.Add(time.Hour), "[k2]"}, // expiry is exclusive
			{testEpoch.Add(3 * time.Hour), "[]"},
		}
		for _, tt := range tests {
			kids, err := s.KeysInUse(ctx, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(kids, " "); "["+got+"]" != tt.want {
				t.Errorf("KeysInUse(%v) = %v, want %s", tt.now, kids, tt.want)
			}
		}
	})
}

func TestNextKeyWaitsForItsActivationTime(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		path := be.newLocation(t)
		s := openAt(t, path, Options{})
		insertTestKey(t, s, "k1", KeyActive)
		at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		if err := s.InsertKey(ctx, newTestKey(t, "k2", KeyNext)); !errors.Is(err, ErrInvalid) {
			t.Errorf("next key without an activation time: %v, want ErrInvalid", err)
		}
		k2 := newTestKey(t, "k2", KeyNext)
		k2.ActivateAt = at
		if err := s.InsertKey(ctx, k2); err != nil {
			t.Fatal(err)
		}
		k3 := newTestKey(t, "k3", KeyNext)
		k3.ActivateAt = at
		if err := s.InsertKey(ctx, k3); !errors.Is(err, ErrKeyState) {
			t.Errorf("second next key: %v, want ErrKeyState", err)
		}
		got, err := s.GetKey(ctx, "k2")
		if err != nil || got.State != KeyNext || !got.ActivateAt.Equal(at) || !bytes.Equal(got.Seed, k2.Seed) {
			t.Fatalf("GetKey(k2) = %s %v (%v), want next at %v with its seed", got.State, got.ActivateAt, err, at)
		}
		if active, err := s.ActiveKey(ctx); err != nil || active.KID != "k1" {
			t.Errorf("ActiveKey while k2 waits = %s, %v; want k1", active.KID, err)
		}
		if due, err := s.KeysDueForActivation(ctx, at.Add(-time.Nanosecond)); err != nil || len(due) != 0 {
			t.Errorf("due before its time: %v, %v", due, err)
		}
		if due, err := s.KeysDueForActivation(ctx, at); err != nil || len(due) != 1 || due[0] != "k2" {
			t.Errorf("due at its time: %v, %v; want [k2]", due, err)
		}
		// The state survives a reopen (it is in the file, not in memory).
		s.Close()
		s = openAt(t, path, Options{})
		if err := s.ActivateKey(ctx, "k2"); err != nil {
			t.Fatal(err)
		}
		states := map[string]KeyState{}
		keys, err := s.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			states[k.KID] = k.State
			if k.KID == "k2" && !k.ActivateAt.IsZero() {
				t.Errorf("active k2 still has an activation time %v", k.ActivateAt)
			}
		}
		if states["k1"] != KeyVerify || states["k2"] != KeyActive {
			t.Errorf("after activating k2: %v, want k1 verify, k2 active", states)
		}
		if due, err := s.KeysDueForActivation(ctx, at.Add(time.Hour)); err != nil || len(due) != 0 {
			t.Errorf("due after activation: %v, %v; want none", due, err)
		}
		// A next key can be withdrawn before it signs.
		k3.ActivateAt = at.Add(time.Hour)
		if err := s.InsertKey(ctx, k3); err != nil {
			t.Fatal(err)
		}
		if err := s.RetireKey(ctx, "k3"); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetKey(ctx, "k3"); err != nil || got.State != KeyRetired {
			t.Errorf("k3 after retiring = %s, %v; want retired", got.State, err)
		}
		if due, err := s.KeysDueForActivation(ctx, at.Add(2*time.Hour)); err != nil || len(due) != 0 {
			t.Errorf("a retired next key is still due: %v, %v", due, err)
		}
	})
}
