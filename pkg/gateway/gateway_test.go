package gateway

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sandkey/sandkey/pkg/auth"
	"github.com/sandkey/sandkey/pkg/auth/tokendir"
	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/process"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/testclock"
	"github.com/sandkey/sandkey/pkg/testmain"
)

func TestMain(m *testing.M) {
	testmain.Run(m, func() error {
		removeBenchTemplates()
		return postgres.Stop()
	})
}

const lifetime = time.Minute

// checkingDriver wraps the real process driver and records, at each
// Start, whether the token directory already held a valid token of the
// sandbox's newest generation: the invariant "no sandbox boots on an
// expired token".
type checkingDriver struct {
	driver.Driver
	t      testing.TB
	g      func() *Gateway
	starts []uint64 // gen found in the directory at each start
}

func (d *checkingDriver) Start(ctx context.Context, spec driver.Spec) error {
	raw, err := tokendir.ReadToken(spec.TokenDir)
	if err != nil {
		d.t.Errorf("driver start of %s: token directory not ready: %v", spec.SandboxID, err)
	} else {
		g := d.g()
		tok, err := g.verify.Verify(string(raw), spec.SandboxID)
		if err != nil {
			d.t.Errorf("driver start of %s on a token that does not verify: %v", spec.SandboxID, err)
		} else {
			d.starts = append(d.starts, tok.Gen())
		}
	}
	return d.Driver.Start(ctx, spec)
}

type env struct {
	t   testing.TB
	dir string
	// tokenRoot and socketRoot, when set, are the gateway's token and
	// socket roots (default under dir).
	tokenRoot, socketRoot string
	// store is the store's location; "": the SQLite file in the state directory.
	store string
	clock *testclock.Clock
	drv   *checkingDriver
	proc  *process.Driver
	g     *Gateway
}

// newEnv opens a gateway on a real store, with the real process driver
// running /usr/bin/env as the "supervisor": `env -- sleep 600` is a real
// sandbox process that simply never registers, which is all the gateway
// core needs.
func newEnv(t *testing.T) *env { return newEnvWith(t, nil) }

// newEnvWith is newEnv calling prepare with the environment's directory
// before the gateway opens (to mount the state directory, say).
func newEnvWith(t *testing.T, prepare func(dir string)) *env {
	t.Helper()
	e := &env{t: t, dir: shortTempDir(t), clock: testclock.New(time.Now().Truncate(time.Second))}
	if prepare != nil {
		prepare(e.dir)
	}
	e.open()
	t.Cleanup(func() {
		ctx := context.Background()
		if e.g != nil {
			if all, err := e.g.List(ctx); err == nil {
				for _, sb := range all {
					e.g.Delete(ctx, sb.ID)
				}
			}
			e.g.Close()
		}
		e.proc.Close()
	})
	return e
}

// shortTempDir is a temporary directory short enough for unix socket
// paths under it (t.TempDir's names carry the test's name).
func shortTempDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (e *env) open() {
	e.t.Helper()
	proc, err := process.New(process.Config{SupervisorPath: "/usr/bin/env", StateRoot: filepath.Join(e.dir, "process")})
	if err != nil {
		e.t.Fatal(err)
	}
	e.proc = proc
	e.drv = &checkingDriver{Driver: proc, t: e.t, g: func() *Gateway { return e.g }}
	g, err := Open(context.Background(), e.config())
	if err != nil {
		e.t.Fatal(err)
	}
	e.g = g
}

func (e *env) config() Config {
	return Config{
		StateDir: filepath.Join(e.dir, "state"), Store: e.store, Lifetime: lifetime, StopGrace: time.Second,
		Drivers: map[string]driver.Driver{"process": e.drv}, DefaultDriver: "process",
		Now: e.clock.Now, Jitter: func() float64 { return 0 }, TokenRoot: e.tokenRoot, SocketRoot: e.socketRoot,
	}
}

// restart closes the gateway and its driver and opens new ones on the
// same state, after the clock moves by down.
func (e *env) restart(down time.Duration) {
	e.t.Helper()
	e.shutdown()
	e.clock.Add(down)
	e.open()
}

// shutdown closes the gateway and its driver, as a gateway that stopped;
// open starts them again.
func (e *env) shutdown() {
	e.g.Close()
	e.g = nil
	e.proc.Close()
}

func (e *env) create(name string) Sandbox {
	e.t.Helper()
	sb, err := e.g.Create(context.Background(), CreateRequest{Name: name, Start: true,
		Spec: Spec{Command: []string{"sleep", "600"}}})
	if err != nil {
		e.t.Fatal(err)
	}
	return sb
}

// dirToken reads and verifies the token in a sandbox's directory at the
// test clock's time.
func (e *env) dirToken(id string) (*auth.Token, error) {
	raw, err := tokendir.ReadToken(e.g.tokenDir(id))
	if err != nil {
		return nil, err
	}
	return e.g.verify.Verify(string(raw), id)
}

func TestStartWritesAFreshTokenBeforeTheDriverStarts(t *testing.T) {
	e := newEnv(t)
	sb := e.create("one")
	if sb.State != StateRunning || sb.LatestGen != 1 || sb.WrittenGen != 1 {
		t.Fatalf("after create+start: %+v", sb)
	}
	if len(e.drv.starts) != 1 || e.drv.starts[0] != 1 {
		t.Fatalf("gens seen by the driver at start = %v, want [1]", e.drv.starts)
	}
	st, err := e.proc.Status(context.Background(), sb.ID)
	if err != nil || st.State != driver.StateRunning {
		t.Fatalf("process status = %+v, %v; want running", st, err)
	}
	for path, want := range map[string]os.FileMode{e.g.tokenDir(sb.ID): 0o700, e.g.socketDir(sb.ID): 0o700} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}
}

func TestResumeAfterExpiryStartsOnAFreshToken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("sleeper")
	if _, err := e.g.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(3 * lifetime) // stopped for longer than a token lives
	if _, err := e.dirToken(sb.ID); !errors.Is(err, auth.ErrExpired) {
		t.Fatalf("token in the directory while stopped: err = %v, want expired", err)
	}
	sb2, err := e.g.Start(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := e.dirToken(sb.ID)
	if err != nil {
		t.Fatalf("token after resume: %v", err)
	}
	if tok.Gen() != 2 || sb2.LatestGen != 2 || len(e.drv.starts) != 2 || e.drv.starts[1] != 2 {
		t.Fatalf("resume: dir gen %d, latest %d, driver saw %v; want 2 everywhere", tok.Gen(), sb2.LatestGen, e.drv.starts)
	}
}

func TestSweepRotatesAtHalfTheLifetime(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := e.create("a"), e.create("b")
	e.clock.Add(lifetime/2 - time.Second)
	if n, err := e.g.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before the rotation point rotated %d (%v), want 0", n, err)
	}
	e.clock.Add(time.Second)
	if n, err := e.g.Sweep(ctx); err != nil || n != 2 {
		t.Fatalf("sweep at the rotation point rotated %d (%v), want 2", n, err)
	}
	for _, sb := range []Sandbox{a, b} {
		tok, err := e.dirToken(sb.ID)
		if err != nil || tok.Gen() != 2 {
			t.Fatalf("%s after sweep: %v, %v; want gen 2", sb.Name, tok, err)
		}
	}
}

func TestOnlyTheTwoNewestGenerationsAuthenticate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("rev")
	var toks []*auth.Token
	tok, _ := e.dirToken(sb.ID)
	toks = append(toks, tok)
	for range 2 {
		if _, err := e.g.Rotate(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
		tok, _ := e.dirToken(sb.ID)
		toks = append(toks, tok)
	}
	if _, err := e.g.Authenticate(ctx, toks[0].Raw(), sb.ID, false); !errors.Is(err, session.ErrSuperseded) {
		t.Fatalf("gen 1 of 3: err = %v, want superseded", err)
	}
	for _, tok := range toks[1:] {
		if _, err := e.g.Authenticate(ctx, tok.Raw(), sb.ID, false); err != nil {
			t.Fatalf("%s refused: %v", tok, err)
		}
	}
	if err := e.g.Delete(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.g.Authenticate(ctx, toks[2].Raw(), sb.ID, true); !errors.Is(err, session.ErrUnknownSandbox) {
		t.Fatalf("newest token after delete: err = %v, want unknown sandbox", err)
	}
	if _, err := os.Stat(e.g.sandboxDir(sb.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("sandbox directory after delete: %v", err)
	}
}

func TestRestartPastExpiryRemintsBeforeServing(t *testing.T) {
	e := newEnv(t)
	sb := e.create("long")
	e.restart(2 * lifetime) // the gateway was down past the token's life
	tok, err := e.dirToken(sb.ID)
	if err != nil || tok.Gen() != 2 {
		t.Fatalf("after restart: %v, %v; want a valid gen 2", tok, err)
	}
	got, _ := e.g.Get(context.Background(), sb.ID)
	if got.State != StateRunning || got.WrittenGen != 2 {
		t.Fatalf("after restart: %+v", got)
	}
}

// The store keeps no token. After a restart, the gateway's latest token
// of a sandbox is the one in its directory (the store's newest generation,
// same jti), or the one its supervisor presents; with neither, a new
// generation.
func TestAfterARestartTheLatestTokenComesFromTheDirectoryTheSupervisorOrANewGeneration(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	sb := e.create("restarts")
	first, err := e.dirToken(sb.ID)
	if err != nil {
		t.Fatal(err)
	}

	e.restart(time.Second)
	tok, err := e.g.Latest(ctx, sb.ID)
	if err != nil || tok.Gen() != 1 || tok.JTI() != first.JTI() {
		t.Fatalf("latest after a restart: %v, %v; want the directory's gen 1 (jti %s)", tok, err, first.JTI())
	}

	// The directory is gone (a tmpfs emptied under a running gateway): the
	// supervisor's Hello brings the token back, and no generation is minted.
	e.restart(time.Second)
	if err := os.RemoveAll(e.g.tokenDir(sb.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.g.Authenticate(ctx, first.Raw(), sb.ID, false); err != nil {
		t.Fatalf("the current generation presented after a restart: %v", err)
	}
	tok, err = e.g.Latest(ctx, sb.ID)
	if err != nil || tok.Gen() != 1 || tok.JTI() != first.JTI() {
		t.Fatalf("latest after the supervisor presented gen 1: %v, %v; want it", tok, err)
	}

	// Neither: a new generation, committed and written before it is
	// handed out. (The first restart's reconcile found the directory
	// empty, and wrote generation 2 into it.)
	e.restart(time.Second)
	e.restart(time.Second)
	if err := os.RemoveAll(e.g.tokenDir(sb.ID)); err != nil {
		t.Fatal(err)
	}
	tok, err = e.g.Latest(ctx, sb.ID)
	if err != nil || tok.Gen() != 3 {
		t.Fatalf("latest with no token anywhere: %v, %v; want a new gen 3", tok, err)
	}
	if inDir, err := e.dirToken(sb.ID); err != nil || inDir.JTI() != tok.JTI() {
		t.Fatalf("directory after the new generation: %v, %v; want %v", inDir, err, tok)
	}
	got, _ := e.g.Get(ctx, sb.ID)
	if got.LatestGen != 3 || got.WrittenGen != 3 {
		t.Fatalf("sandbox after the new generation: %+v", got)
	}
}

func TestRestartMarksEndedSandboxesStopped(t *testing.T) {
	e := newEnv(t)
	sb := e.create("ends")
	if err := e.proc.Stop(context.Background(), sb.ID, time.Second); err != nil { // behind the gateway's back
		t.Fatal(err)
	}
	e.restart(0)
	got, _ := e.g.Get(context.Background(), sb.ID)
	if got.State != StateStopped {
		t.Fatalf("state after restart = %s, want stopped", got.State)
	}
}

func TestImmediateKeyRotationKeepsOldTokensUntilTheyExpire(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("keys")
	old, _ := e.dirToken(sb.ID)
	oldKID := e.g.keys.Active().KID
	rotation, err := e.g.RotateKeys(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	newKID := rotation.KID
	if _, err := e.g.Rotate(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	jwks, err := auth.ParseJWKS(e.g.JWKSJSON())
	if err != nil || len(jwks.Keys) != 2 || jwks.Keys[0].Kid != newKID {
		t.Fatalf("JWKS after rotation: %+v, %v; want the new key first of two", jwks, err)
	}
	if _, err := e.g.Authenticate(ctx, old.Raw(), sb.ID, false); err != nil {
		t.Fatalf("token of the previous key refused: %v", err)
	}
	e.clock.Add(lifetime + auth.Leeway + time.Second)
	if _, err := e.g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	jwks, _ = auth.ParseJWKS(e.g.JWKSJSON())
	for _, k := range jwks.Keys {
		if k.Kid == oldKID {
			t.Fatalf("old key %s still in the JWKS after its last token expired", oldKID)
		}
	}
	dirJWKS, err := tokendir.ReadFile(e.g.tokenDir(sb.ID), tokendir.JWKSFile)
	if err != nil || !strings.Contains(string(dirJWKS), newKID) {
		t.Fatalf("jwks.json in the token directory lacks the new key: %v", err)
	}
}

func TestOpenRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	proc, err := process.New(process.Config{SupervisorPath: "/usr/bin/env", StateRoot: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Close()
	loose := filepath.Join(dir, "loose")
	os.Mkdir(loose, 0o755)
	good := func() Config {
		return Config{StateDir: filepath.Join(dir, "s"), Lifetime: lifetime, Drivers: map[string]driver.Driver{"process": proc}}
	}
	cases := map[string]struct {
		edit func(*Config)
		want string
	}{
		"short lifetime":  {func(c *Config) { c.Lifetime = 5 * time.Second }, "at least 10s"},
		"no driver":       {func(c *Config) { c.Drivers = nil }, "no compute driver"},
		"unknown default": {func(c *Config) { c.DefaultDriver = "kvm" }, `default driver "kvm" is not registered`},
		"loose state dir": {func(c *Config) { c.StateDir = loose }, "chmod 700"},
		"key published shorter than the JWKS is cached": {func(c *Config) { c.JWKSMaxAge, c.KeyPublishDelay = time.Hour, time.Minute },
			"must be at least the JWKS max-age"},
		"slow sweep":     {func(c *Config) { c.SweepInterval = time.Minute }, "at most a quarter"},
		"long state dir": {func(c *Config) { c.StateDir = "/tmp/" + strings.Repeat("x", 60) }, "unix socket paths"},
	}
	for name, tc := range cases {
		cfg := good()
		tc.edit(&cfg)
		g, err := Open(context.Background(), cfg)
		if err == nil {
			g.Close()
			t.Errorf("%s: Open succeeded", name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
}

func TestOpenRefusesACorruptStoreAndLeavesItAlone(t *testing.T) {
	dir := filepath.Join(shortTempDir(t), "state")
	os.MkdirAll(dir, 0o700)
	garbage := []byte("this is not a database, and must survive the attempt")
	path := filepath.Join(dir, StoreFile)
	os.WriteFile(path, garbage, 0o600)
	proc, _ := process.New(process.Config{SupervisorPath: "/usr/bin/env", StateRoot: t.TempDir()})
	defer proc.Close()
	_, err := Open(context.Background(), Config{StateDir: dir, Lifetime: lifetime, Drivers: map[string]driver.Driver{"process": proc}})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want an error naming %s", err, path)
	}
	if got, _ := os.ReadFile(path); string(got) != string(garbage) {
		t.Fatal("the corrupt store was modified")
	}
}

func TestCreateRefusesBadRequests(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	dup := e.create("dup")
	for name, req := range map[string]CreateRequest{
		"another sandbox's id": {Name: dup.ID, Spec: Spec{Command: []string{"true"}}},
		"an id's form":         {Name: strings.Repeat("0a", 16), Spec: Spec{Command: []string{"true"}}},
		"duplicate name":       {Name: "dup", Spec: Spec{Command: []string{"true"}}},
		"bad name":             {Name: "../etc", Spec: Spec{Command: []string{"true"}}},
		"no command":           {Name: "empty"},
		"unknown driver":       {Name: "x", Driver: "kvm", Spec: Spec{Command: []string{"true"}}},
	} {
		_, err := e.g.Create(ctx, req)
		if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrExists) {
			t.Errorf("%s: create: %v, want it refused as invalid or existing", name, err)
		}
		if name == "unknown driver" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--drivers")) {
			t.Errorf("unknown driver: %v, want ErrInvalid saying how drivers are enabled", err)
		}
	}
	all, _ := e.g.List(ctx)
	if len(all) != 1 {
		t.Fatalf("sandboxes after refused creates: %d, want 1", len(all))
	}
}

func TestSweepPrunesGenerationsThatCanNoLongerAuthenticate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("old")
	for range 4 { // gens 2..5
		if _, err := e.g.Rotate(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Add(lifetime + auth.Leeway + time.Second) // gens 1..5 expired
	if _, err := e.g.Sweep(ctx); err != nil {         // mints gen 6, then prunes
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(e.g.metrics.pruned); got != 4 {
		t.Fatalf("pruned %v generation records, want 4 (gens 1-4; 5 and 6 are the newest two)", got)
	}
	latest, err := e.g.store.LatestGeneration(ctx, sb.ID)
	if err != nil || latest.Gen != 6 {
		t.Fatalf("latest generation after pruning: %+v, %v", latest, err)
	}
}

// TestStoreRestoredFromBackupNeverIssuesAGenerationTwice puts back a copy
// of the store taken before three rotations. Sandbox a still runs
// (reconcile sees its directory), b was stopped meanwhile (its start sees
// its directory), and c's directory went back too, so only its
// supervisor's token shows how far it had come. Each gets a generation
// above everything it ever held, and no generation ever has two jtis.
func TestStoreRestoredFromBackupNeverIssuesAGenerationTwice(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	issued := map[string]map[uint64]string{} // sandbox -> gen -> jti
	note := func(tok *auth.Token) {
		t.Helper()
		if issued[tok.SandboxID()] == nil {
			issued[tok.SandboxID()] = map[uint64]string{}
		}
		if prev, ok := issued[tok.SandboxID()][tok.Gen()]; ok && prev != tok.JTI() {
			t.Fatalf("sandbox %s: generation %d issued twice (jti %s and %s)", tok.SandboxID(), tok.Gen(), prev, tok.JTI())
		}
		issued[tok.SandboxID()][tok.Gen()] = tok.JTI()
	}
	noteDir := func(id string) *auth.Token {
		t.Helper()
		raw, err := tokendir.ReadToken(e.g.tokenDir(id))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := e.g.verify.VerifyIgnoringExpiry(string(raw), id)
		if err != nil {
			t.Fatal(err)
		}
		note(tok)
		return tok
	}
	a, b, c := e.create("a"), e.create("b"), e.create("c")
	for _, sb := range []Sandbox{a, b, c} {
		noteDir(sb.ID)
	}
	cBackupToken, _ := tokendir.ReadToken(e.g.tokenDir(c.ID))

	backup := e.backupStore()
	held := map[string]*auth.Token{} // what each supervisor holds at the end
	for range 3 {
		for _, sb := range []Sandbox{a, b, c} {
			if _, err := e.g.Rotate(ctx, sb.ID); err != nil {
				t.Fatal(err)
			}
			held[sb.ID] = noteDir(sb.ID)
		}
	}
	if _, err := e.g.Stop(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	// c's directory goes back with the store; its supervisor kept gen 4.
	w, err := tokendir.NewWriter(e.g.tokenDir(c.ID))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(map[string][]byte{tokendir.TokenFile: cBackupToken, tokendir.JWKSFile: e.g.JWKSJSON()}); err != nil {
		t.Fatal(err)
	}

	e.restoreStore(backup)

	// a: reconcile saw gen 4 in its directory and minted above it.
	if tok := noteDir(a.ID); tok.Gen() <= held[a.ID].Gen() {
		t.Fatalf("sandbox a after the restore: directory at gen %d, want above %d", tok.Gen(), held[a.ID].Gen())
	}
	if got, _ := e.g.store.GetSandbox(ctx, b.ID); got.LatestGen != 1 {
		t.Fatalf("restored store: sandbox b at gen %d, want the backup's 1", got.LatestGen)
	}
	// b: its start sees gen 4 in its directory.
	if _, err := e.g.Start(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if tok := noteDir(b.ID); tok.Gen() <= held[b.ID].Gen() {
		t.Fatalf("sandbox b started after the restore: gen %d, want above %d", tok.Gen(), held[b.ID].Gen())
	}
	// c: the supervisor's forgotten token is refused as not issued, and
	// the answer to it on an attested socket is above it.
	_, err = e.g.Authenticate(ctx, held[c.ID].Raw(), c.ID, true)
	var notIssued *session.NotIssuedError
	if !errors.As(err, &notIssued) || notIssued.Token.Gen() != held[c.ID].Gen() {
		t.Fatalf("forgotten gen %d: err = %v, want not issued", held[c.ID].Gen(), err)
	}
	tok, err := e.g.Reissue(ctx, c.ID, held[c.ID].Gen())
	if err != nil {
		t.Fatal(err)
	}
	note(tok)
	if tok.Gen() <= held[c.ID].Gen() {
		t.Fatalf("reissued gen %d for a supervisor holding gen %d", tok.Gen(), held[c.ID].Gen())
	}
	if got := noteDir(c.ID); got.JTI() != tok.JTI() {
		t.Fatalf("directory holds %s, want the reissued %s", got, tok)
	}
	if _, err := e.g.Authenticate(ctx, tok.Raw(), c.ID, false); err != nil {
		t.Fatalf("reissued token refused: %v", err)
	}
	for _, sb := range []Sandbox{a, b} {
		if _, err := e.g.Authenticate(ctx, held[sb.ID].Raw(), sb.ID, true); !errors.As(err, &notIssued) {
			t.Fatalf("sandbox %s's forgotten gen %d: err = %v, want not issued", sb.Name, held[sb.ID].Gen(), err)
		}
	}
}

// A sweep commits a sandbox's generation, the sandbox is deleted, then
// the sweep writes the token: the write makes the directory again, after
// Delete removed it. The deliver step, told by the store that the
// sandbox is gone, removes it and forgets the sandbox.
func TestATokenWrittenAfterItsSandboxWasDeletedLeavesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := e.create("racer")
	tok, err := e.g.latestToken(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.g.Delete(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	e.g.deliver(ctx, minted{sb.ID: tok}, "rotation")
	if _, err := os.Lstat(e.g.tokenDir(sb.ID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the deleted sandbox's token directory is back: %v", err)
	}
	if e.g.cachedToken(sb.ID) != nil {
		t.Error("the gateway still caches the deleted sandbox's token")
	}
	if _, ok := e.g.writers.Load(sb.ID); ok {
		t.Error("the gateway still keeps a writer for the deleted sandbox")
	}
}
