package replicas

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sandkey/sandkey/pkg/driver/kubetest"
	"github.com/sandkey/sandkey/pkg/randid"
	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/store/pgtest"
	"github.com/sandkey/sandkey/pkg/testpki"
	"github.com/sandkey/sandkey/test/binaries"
	"github.com/sandkey/sandkey/test/kubeenv"
)

const (
	// imageRef is the sandbox image: the supervisor as entrypoint and
	// busybox as the workload's tools.
	imageRef = "sandkey.local/replicas-sandbox:1"
	// lease is the leader lease, the shortest allowed.
	lease = 3 * time.Second
	// replicaCount is how many gateway replicas a test runs.
	replicaCount = 3
)

var imageOnce sync.Once

// replicaSet is one test's world: a namespace, a database schema, TLS
// material, three gateway replicas and the Service stand-in in front of
// their session listeners.
type replicaSet struct {
	t          testing.TB
	c          *kubetest.Cluster
	pg         *pgtest.Server
	dsn        string
	db         *sql.DB // the test's own connection, for looking at the tables
	ns         string
	dir        string
	kubeconfig string
	tls        testpki.Serving
	tokenFile  string // the operator token every replica requires
	service    *serviceStandIn
	replicas   []*replica
}

// replica is one `gateway serve` in replica mode.
type replica struct {
	rs          *replicaSet
	n           int
	state       string
	logPath     string
	sessionAddr string // its own session listener, behind the stand-in
	adminAddr   string // its operator API, TLS + token; also --replica-advertise
	httpAddr    string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been waited for
}

func newReplicaSet(t testing.TB) *replicaSet {
	t.Helper()
	c := cluster.Cluster(t)
	pg := postgres.Server(t)
	// Short: state directories hold unix sockets whose paths must fit.
	// Each replica, as root, mounts tmpfs roots there.
	dir := binaries.TempDir(t, "rep")
	var err error
	rs := &replicaSet{t: t, c: c, pg: pg, dir: dir, ns: "replicas-" + randid.New(4)}
	rs.dsn = postgres.NewSchema(t)
	rs.db, err = sql.Open("pgx", rs.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.db.Close() })

	c.Namespace(t, rs.ns)
	c.ServiceAccount(t, rs.ns, kubeenv.SandboxSA)
	kubeenv.GrantGateway(t, c, rs.ns, kubeenv.GatewayUser)
	rs.kubeconfig = c.KubeconfigFor(t, kubeenv.GatewayUser)
	// One certificate for every replica, as from one Kubernetes Secret:
	// valid where pods reach the Service, and where peers and operators
	// reach the operator APIs.
	rs.tls = kubeenv.WriteTLS(t, dir, c.HostIP(), "127.0.0.1")
	rs.tokenFile = filepath.Join(dir, "admin.token")
	if err := os.WriteFile(rs.tokenFile, []byte(randid.New(16)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	imageOnce.Do(func() { kubeenv.ImportSandboxImage(t, c, imageRef) })

	var backends []string
	addrs := kubeenv.FreeAddrs(t, "127.0.0.1", 3*replicaCount)
	for i := range replicaCount {
		r := &replica{rs: rs, n: i, state: filepath.Join(dir, fmt.Sprintf("r%d", i)),
			logPath:     filepath.Join(dir, fmt.Sprintf("r%d.log", i)),
			sessionAddr: addrs[3*i], adminAddr: addrs[3*i+1], httpAddr: addrs[3*i+2]}
		rs.replicas = append(rs.replicas, r)
		backends = append(backends, r.sessionAddr)
	}
	rs.service, err = newServiceStandIn(kubeenv.FreeAddr(t, c.HostIP()), backends)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, r := range rs.replicas {
			r.stop()
		}
		rs.service.Close()
		if t.Failed() {
			rs.dumpLogs()
		}
	})
	for _, r := range rs.replicas {
		r.start()
	}
	return rs
}

// start runs the replica and returns once its /readyz says ready.
func (r *replica) start() {
	t := r.rs.t
	t.Helper()
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	rs := r.rs
	cmd := exec.Command(binaries.Gateway, "serve", "--state-dir", r.state, "--store", rs.dsn,
		"--replica-advertise", r.adminAddr, "--leader-lease", lease.String(),
		"--drivers", "kubernetes", "--driver", "kubernetes",
		"--kubernetes-kubeconfig", rs.kubeconfig, "--kubernetes-namespace", rs.ns,
		"--kubernetes-service-account", kubeenv.SandboxSA, "--kubernetes-gateway", "tls://"+rs.service.Addr(),
		"--kubernetes-ca-file", rs.tls.CAFile, "--kubernetes-image-pull-policy", "Never",
		"--session-addr", r.sessionAddr, "--session-tls-cert", rs.tls.CertFile, "--session-tls-key", rs.tls.KeyFile,
		"--admin-tcp", r.adminAddr, "--admin-tls-cert", rs.tls.CertFile, "--admin-tls-key", rs.tls.KeyFile,
		"--admin-token-file", rs.tokenFile,
		"--token-lifetime", kubeenv.Lifetime.String(), "--sweep-interval", "100ms", "--heartbeat-interval", "1s",
		"--http-addr", r.httpAddr, "--stop-grace", "2s", "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a signal meant for the test never reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	deadline := time.Now().Add(kubeenv.Bound)
	for {
		if ok, _ := r.ready(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %d not ready within %s; see %s", r.n, kubeenv.Bound, r.logPath)
		}
		select {
		case <-done:
			t.Fatalf("replica %d exited at start (%v):\n%s", r.n, cmd.ProcessState, r.logTail(20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ready asks the replica's /readyz; the text is its reason when not.
func (r *replica) ready() (bool, string) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + r.httpAddr + "/readyz")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	return resp.StatusCode == http.StatusOK, strings.TrimSpace(body.String())
}

// alive reports whether the replica's process runs.
func (r *replica) alive() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// kill ends the replica with SIGKILL, as a crashed node would.
func (r *replica) kill() { r.end(syscall.SIGKILL, 0) }

// stop ends the replica as an operator would (SIGTERM), with SIGKILL
// after 30 s; its pods keep running.
func (r *replica) stop() { r.end(syscall.SIGTERM, 30*time.Second) }

// end sends sig to the running replica, if any, and waits for it to exit,
// sending SIGKILL once grace has passed (at once, for a grace of 0).
func (r *replica) end(sig syscall.Signal, grace time.Duration) {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// cli runs the gateway command line against this replica's operator API.
func (r *replica) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubeenv.Bound)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, binaries.Gateway, append([]string{"--admin", r.adminAddr,
		"--admin-token-file", r.rs.tokenFile, "--admin-ca", r.rs.tls.CAFile}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("replica %d: gateway %s: %v: %s", r.n, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (r *replica) mustCLI(args ...string) string {
	r.rs.t.Helper()
	out, err := r.cli(args...)
	if err != nil {
		r.rs.t.Fatal(err)
	}
	return out
}

// metric is one sample of the replica's /metrics (0 when absent).
func (r *replica) metric(name, labels string) (float64, error) {
	return kubeenv.Metric(r.httpAddr, name, labels)
}

// infoTail is the last n lines of the replica's log above debug.
func (r *replica) infoTail(n int) string {
	data, _ := os.ReadFile(r.logPath)
	var keep []string
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.Contains(l, `"level":"debug"`) {
			keep = append(keep, l)
		}
	}
	return kubeenv.Tail([]byte(strings.Join(keep, "\n")), n)
}

func (r *replica) logTail(n int) string {
	data, _ := os.ReadFile(r.logPath)
	return kubeenv.Tail(data, n)
}

// sandboxView is a sandbox as `sandbox get/list -o json` shows it.
type sandboxView struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	State        string `json:"state"`
	InstanceID   string `json:"instance_id"`
	LatestGen    uint64 `json:"latest_gen"`
	DeliveredGen uint64 `json:"delivered_gen"`
	Connected    bool   `json:"connected"`
	ReplicaID    string `json:"replica_id"`
}

func (r *replica) list() ([]sandboxView, error) {
	out, err := r.cli("sandbox", "list", "-o", "json")
	if err != nil {
		return nil, err
	}
	var all []sandboxView
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		return nil, fmt.Errorf("replica %d: sandbox list -o json: %w: %s", r.n, err, out)
	}
	return all, nil
}

// create creates and starts a sandbox running sleep, through replica r.
func (r *replica) create(name string) sandboxView {
	r.rs.t.Helper()
	out := r.mustCLI("sandbox", "create", name, "--driver", "kubernetes", "--image", imageRef, "--start", "-o", "json",
		"--", "/busybox", "sleep", "3600")
	var v sandboxView
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.ID == "" {
		r.rs.t.Fatalf("sandbox create -o json: %v: %s", err, out)
	}
	return v
}

// live returns the replicas whose process runs.
func (rs *replicaSet) live() []*replica {
	var out []*replica
	for _, r := range rs.replicas {
		if r.alive() {
			out = append(out, r)
		}
	}
	return out
}

// anyLive is the first live replica.
func (rs *replicaSet) anyLive() *replica {
	rs.t.Helper()
	l := rs.live()
	if len(l) == 0 {
		rs.t.Fatal("no replica is alive")
	}
	return l[0]
}

// leaders returns the live replicas whose /metrics say sandkey_leader 1.
func (rs *replicaSet) leaders() []*replica {
	var out []*replica
	for _, r := range rs.live() {
		if v, err := r.metric("sandkey_leader", ""); err == nil && v == 1 {
			out = append(out, r)
		}
	}
	return out
}

// awaitLeader waits for exactly one live replica to say it leads.
func (rs *replicaSet) awaitLeader(limit time.Duration) *replica {
	rs.t.Helper()
	var l []*replica
	rs.eventually("exactly one leader", limit, func() bool {
		l = rs.leaders()
		return len(l) == 1
	})
	return l[0]
}

// byAdminAddr maps the replicas table's admin_addr to the replica.
func (rs *replicaSet) byAdminAddr(addr string) *replica {
	for _, r := range rs.replicas {
		if r.adminAddr == addr {
			return r
		}
	}
	return nil
}

// holders reads session_holders joined with replicas from the database:
// which replica holds each sandbox's session, for rows naming a replica
// registered (live or not: the caller judges).
func (rs *replicaSet) holders() (map[string]*replica, error) {
	rows, err := rs.db.Query(`SELECT h.sandbox_id, r.admin_addr FROM session_holders h JOIN replicas r ON r.id = h.replica_id`)
	if err != nil {
		return nil, fmt.Errorf("read session_holders: %w", err)
	}
	defer rows.Close()
	out := map[string]*replica{}
	for rows.Next() {
		var id, addr string
		if err := rows.Scan(&id, &addr); err != nil {
			return nil, err
		}
		out[id] = rs.byAdminAddr(addr)
	}
	return out, rows.Err()
}

// eventually polls cond every 50 ms until it holds, failing after limit.
func (rs *replicaSet) eventually(what string, limit time.Duration, cond func() bool) {
	rs.t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			rs.t.Fatalf("not within %s: %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logEvent is one line of a replica's JSON log.
type logEvent struct {
	At      time.Time
	Msg     string
	Sandbox string
	Token   string // a token's description (sandbox=… gen=… jti=…), never the token
	Fields  map[string]any
}

// events reads the replica's log lines whose msg is one of msgs.
func (r *replica) events(msgs ...string) []logEvent {
	f, err := os.Open(r.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		msg, _ := m["msg"].(string)
		if !contains(msgs, msg) {
			continue
		}
		ts, _ := m["ts"].(float64)
		sec, frac := math.Modf(ts)
		e := logEvent{At: time.Unix(int64(sec), int64(frac*1e9)), Msg: msg, Fields: m}
		e.Sandbox, _ = m["sandbox"].(string)
		for _, k := range []string{"token", "latest", "presented"} {
			if s, ok := m[k].(string); ok && strings.HasPrefix(s, "sandbox=") {
				e.Token = s
				break
			}
		}
		out = append(out, e)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// acceptedSince returns, per sandbox, the first session the replica
// accepted at or after since.
func (r *replica) acceptedSince(since time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for _, e := range r.events("session accepted") {
		if e.Sandbox == "" || e.At.Before(since) {
			continue
		}
		if _, seen := out[e.Sandbox]; !seen {
			out[e.Sandbox] = e.At
		}
	}
	return out
}

// issued is one (sandbox, gen, jti) a replica's log shows it handing out.
type issued struct{ sandbox, gen, jti string }

// tokensSeen collects every token description in every replica's log
// (pushes, acknowledgements, sessions accepted, exchanges).
func (rs *replicaSet) tokensSeen() []issued {
	var out []issued
	for _, r := range rs.replicas {
		for _, e := range r.events("token pushed", "token acknowledged", "token resent", "session accepted", "exchange") {
			if e.Token != "" {
				f := map[string]string{}
				for _, kv := range strings.Fields(e.Token) {
					if k, v, ok := strings.Cut(kv, "="); ok {
						f[k] = v
					}
				}
				out = append(out, issued{f["sandbox"], f["gen"], f["jti"]})
			}
			if e.Msg == "exchange" { // logs its gen and jti as fields
				gen, _ := e.Fields["gen"].(float64)
				jti, _ := e.Fields["jti"].(string)
				if jti != "" {
					out = append(out, issued{e.Sandbox, strconv.FormatUint(uint64(gen), 10), jti})
				}
			}
		}
	}
	return out
}

// checkNoGenerationTwice fails the test when a generation has two jtis
// (see generationDoubles) and returns how many generations it checked.
func (rs *replicaSet) checkNoGenerationTwice() (checked int) {
	rs.t.Helper()
	checked, doubles, err := rs.generationDoubles()
	if err != nil {
		rs.t.Fatal(err)
	}
	for _, d := range doubles {
		rs.t.Error(d)
	}
	return checked
}

// generationDoubles looks for a generation with two jtis: among the
// tokens every replica's log shows handed out, or between them and the
// generations table.
func (rs *replicaSet) generationDoubles() (checked int, doubles []string, err error) {
	byGen := map[[2]string]map[string]bool{}
	for _, s := range rs.tokensSeen() {
		k := [2]string{s.sandbox, s.gen}
		if byGen[k] == nil {
			byGen[k] = map[string]bool{}
		}
		byGen[k][s.jti] = true
	}
	rows, err := rs.db.Query(`SELECT sandbox_id, gen, jti FROM generations`)
	if err != nil {
		return 0, nil, fmt.Errorf("read generations: %w", err)
	}
	defer rows.Close()
	stored := map[[2]string]string{}
	for rows.Next() {
		var id, jti string
		var gen int64
		if err := rows.Scan(&id, &gen, &jti); err != nil {
			return 0, nil, err
		}
		stored[[2]string{id, strconv.FormatInt(gen, 10)}] = jti
	}
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}
	for k, jtis := range byGen {
		if len(jtis) > 1 {
			doubles = append(doubles, fmt.Sprintf("sandbox %s generation %s was handed out with %d jtis: %v", k[0], k[1], len(jtis), keys(jtis)))
		}
		if want, ok := stored[k]; ok && !jtis[want] {
			doubles = append(doubles, fmt.Sprintf("sandbox %s generation %s: handed out as %v, stored as %s", k[0], k[1], keys(jtis), want))
		}
	}
	sort.Strings(doubles)
	return len(byGen), doubles, nil
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// exchange presents credential to the exchange of the replica at addr
// (its own listener, or the stand-in's) for sandboxID.
func (rs *replicaSet) exchange(addr, sandboxID, credential string) (string, error) {
	c, err := session.NewExchangeClient("tls://"+addr, sandboxID, session.WithTLSConfig(rs.clientTLS()))
	if err != nil {
		return "", err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, _, err := c.Exchange(ctx, credential)
	return tok, err
}

// projectedToken reads the pod's projected ServiceAccount token through
// `sandbox exec` on replica r.
func (r *replica) projectedToken(name string) string {
	r.rs.t.Helper()
	return strings.TrimSpace(r.mustCLI("sandbox", "exec", name, "--", "/busybox", "cat", "/run/sandkey/k8s-sa/token"))
}

// dumpLogs shows every replica's log and every pod's, after a failure.
func (rs *replicaSet) dumpLogs() {
	for _, r := range rs.replicas {
		keep := filepath.Join(os.TempDir(), fmt.Sprintf("sandkey-replicas-%s-r%d.log", strings.ReplaceAll(rs.t.Name(), "/", "_"), r.n))
		if data, err := os.ReadFile(r.logPath); err == nil && os.WriteFile(keep, data, 0o600) == nil {
			rs.t.Logf("replica %d's whole log kept at %s", r.n, keep)
		}
		rs.t.Logf("replica %d (%s) log, info and above:\n%s", r.n, r.adminAddr, r.infoTail(60))
	}
	ctx := context.Background()
	list, err := rs.c.Client().CoreV1().Pods(rs.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, p := range list.Items {
		data, err := rs.c.Client().CoreV1().Pods(rs.ns).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		rs.t.Logf("pod %s (%s) log (%v):\n%s", p.Name, p.Status.Phase, err, kubeenv.Tail(data, 30))
	}
}

// percentile is the p-th percentile (0-100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(k, 0)]
}

// generation is a row of the generations table.
type generation struct {
	gen             uint64
	jti             string
	issued, expires time.Time
}

// latestGeneration reads a sandbox's newest generation from the database
// (zero when it has none).
func (rs *replicaSet) latestGeneration(sandboxID string) generation {
	rs.t.Helper()
	var g generation
	var gen, iat, exp int64
	err := rs.db.QueryRow(`SELECT gen, jti, issued_at, expires_at FROM generations WHERE sandbox_id = $1 ORDER BY gen DESC LIMIT 1`,
		sandboxID).Scan(&gen, &g.jti, &iat, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return g
	}
	if err != nil {
		rs.t.Fatalf("latest generation of %s: %v", sandboxID, err)
	}
	g.gen, g.issued, g.expires = uint64(gen), time.Unix(0, iat), time.Unix(0, exp)
	return g
}

// deliveredGen reads a sandbox's acknowledged generation from the
// database.
func (rs *replicaSet) deliveredGen(sandboxID string) (uint64, error) {
	var gen int64
	err := rs.db.QueryRow(`SELECT delivered_gen FROM sandboxes WHERE id = $1`, sandboxID).Scan(&gen)
	return uint64(gen), err
}

// clientTLS trusts the replicas' certificate, as a supervisor does.
func (rs *replicaSet) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: rs.tls.Pool, MinVersion: tls.VersionTLS12}
}

// signal sends sig to the replica's process (SIGSTOP, SIGCONT).
func (r *replica) signal(sig syscall.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		r.cmd.Process.Signal(sig)
	}
}
