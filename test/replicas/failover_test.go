package replicas

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkey/sandkey/pkg/session"
	"github.com/sandkey/sandkey/pkg/session/sessiontest"
	"github.com/sandkey/sandkey/test/kubeenv"
)

// sandboxCount is how many sandboxes the failover test runs.
const sandboxCount = 6

// createSpread creates n sandboxes, round-robin through the replicas,
// and waits until every one's session is registered (session_holders
// names a live replica for it). It returns their ids by name.
func (rs *replicaSet) createSpread(n int) (names []string, ids map[string]string) {
	rs.t.Helper()
	ids = map[string]string{}
	for i := range n {
		name := fmt.Sprintf("sb%d", i)
		v := rs.replicas[i%len(rs.replicas)].create(name)
		names = append(names, name)
		ids[name] = v.ID
	}
	rs.awaitHeld(ids)
	return names, ids
}

// awaitHeld waits until every sandbox of ids has its session held by a
// live replica.
func (rs *replicaSet) awaitHeld(ids map[string]string) map[string]*replica {
	rs.t.Helper()
	var held map[string]*replica
	rs.eventually("every session held by a live replica", kubeenv.Bound, func() bool {
		h, err := rs.holders()
		if err != nil {
			return false
		}
		for _, id := range ids {
			if r := h[id]; r == nil || !r.alive() {
				return false
			}
		}
		held = h
		return true
	})
	return held
}

// spread counts the sessions each replica holds.
func spread(held map[string]*replica, ids map[string]string) []int {
	n := make([]int, replicaCount)
	for _, id := range ids {
		if r := held[id]; r != nil {
			n[r.n]++
		}
	}
	return n
}

// Acceptance 2: SIGKILL the leader. Another replica takes the lease and
// sweeps before any token lapses; every supervisor whose session was on
// the killed replica registers again through the Service within 2 s plus
// the lease; no generation has two jtis; a deleted sandbox's credentials
// are refused by every replica, the restarted one included.
func TestReplicasLeaderKilled(t *testing.T) {
	rs := newReplicaSet(t)
	names, ids := rs.createSpread(sandboxCount)
	leader := rs.awaitLeader(kubeenv.Bound)
	held := rs.awaitHeld(ids)
	// The leader must hold sessions, or the test proves nothing: cut the
	// others' connections at the Service until their supervisors land on
	// it (round-robin).
	for attempt := 0; spread(held, ids)[leader.n] == 0; attempt++ {
		if attempt == 5 {
			t.Fatalf("the leader (replica %d) holds no session after %d reshuffles: %v", leader.n, attempt, spread(held, ids))
		}
		for _, r := range rs.replicas {
			if r != leader {
				rs.service.cut(r.n)
			}
		}
		time.Sleep(time.Second)
		held = rs.awaitHeld(ids)
	}
	var orphans []string // sandboxes whose session the leader holds
	for _, name := range names {
		if held[ids[name]] == leader {
			orphans = append(orphans, name)
		}
	}
	t.Logf("sessions per replica %v; leader is replica %d, holding %v", spread(held, ids), leader.n, orphans)

	// A sandbox to delete after the failover, with its credentials taken
	// now: the pod's projected token, and a sandkey token the exchange
	// gives for it.
	doomed := names[len(names)-1]
	projected := rs.replicas[held[ids[doomed]].n].projectedToken(doomed)
	sandkeyToken, err := rs.exchange(rs.service.Addr(), ids[doomed], projected)
	if err != nil {
		t.Fatalf("exchange for %s before the failover: %v", doomed, err)
	}

	var lastBefore = map[string]generation{}
	for _, id := range ids {
		lastBefore[id] = rs.latestGeneration(id)
	}
	killedAt := time.Now()
	leader.kill()

	// Failover: a survivor says it leads.
	next := rs.awaitLeader(2*lease + 5*time.Second)
	failover := time.Since(killedAt)
	t.Logf("failover: replica %d leads %s after the SIGKILL of replica %d (lease %s)", next.n, failover.Round(time.Millisecond), leader.n, lease)
	// The dead leader's lease runs out at most a lease after the kill,
	// and a survivor tries for it the moment it does (by the database's
	// clock); a second more for this loaded machine and the 50 ms polling.
	if limit := lease + time.Second; failover > limit {
		t.Errorf("replica %d took the lease %s after the leader's death; want within %s (lease %s)", next.n, failover.Round(time.Millisecond), limit, lease)
	}

	// Its sweeps go on: every sandbox gets a new generation before the
	// token it had at the kill expires. (Seen when polled: no later than
	// minted.)
	rotatedSeen := map[string]time.Time{}
	rs.eventually("every sandbox rotated after the kill", kubeenv.Lifetime+kubeenv.Bound/3, func() bool {
		for name, id := range ids {
			if _, ok := rotatedSeen[name]; !ok && rs.latestGeneration(id).gen > lastBefore[id].gen {
				rotatedSeen[name] = time.Now()
			}
		}
		return len(rotatedSeen) == len(ids)
	})
	for name, id := range ids {
		before, seen := lastBefore[id], rotatedSeen[name]
		t.Logf("sandbox %s: gen %d (expiring %s after the kill) rotated, seen %s after the kill",
			name, before.gen, before.expires.Sub(killedAt).Round(time.Millisecond), seen.Sub(killedAt).Round(time.Millisecond))
		if !seen.Before(before.expires) {
			t.Errorf("sandbox %s: its token (gen %d) expired %s after the kill, before a new generation was minted",
				name, before.gen, before.expires.Sub(killedAt).Round(time.Millisecond))
		}
	}
	// And it sweeps on: its own rotations (not only what it minted on
	// taking the lease) come within a rotation period.
	rs.eventually(fmt.Sprintf("a rotation swept by the new leader (replica %d)", next.n), kubeenv.Lifetime+lease, func() bool {
		v, err := next.metric("sandkey_tokens_minted_total", `{reason="rotation"}`)
		return err == nil && v > 0
	})
	t.Logf("the new leader's first swept rotation seen %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	for _, reason := range []string{"reconcile", "rotation", "reissue", "exchange"} {
		if v, err := next.metric("sandkey_tokens_minted_total", `{reason="`+reason+`"}`); err == nil && v > 0 {
			t.Logf("new leader minted %v token(s) for %s", v, reason)
		}
	}

	// Re-registration of every orphaned supervisor through the Service.
	limit := 2*time.Second + lease
	rs.eventually("every orphaned session registered again", kubeenv.Bound, func() bool {
		return len(rs.reRegistered(orphans, ids, killedAt)) == len(orphans)
	})
	var worst time.Duration
	for name, at := range rs.reRegistered(orphans, ids, killedAt) {
		d := at.Sub(killedAt)
		worst = max(worst, d)
		t.Logf("sandbox %s registered again %s after the kill", name, d.Round(time.Millisecond))
	}
	t.Logf("re-registration: %d sessions, slowest %s (limit 2 s + lease = %s)", len(orphans), worst.Round(time.Millisecond), limit)
	if worst > limit {
		t.Errorf("the slowest orphaned session registered again %s after the kill; want within %s", worst.Round(time.Millisecond), limit)
	}
	held = rs.awaitHeld(ids)

	// The survivors' operator APIs agree on the new holders, and reach
	// the re-registered sessions.
	deadID := rs.replicaIDOf(leader)
	for _, r := range rs.live() {
		list, err := r.list()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range list {
			if !v.Connected || v.ReplicaID == "" || v.ReplicaID == deadID || v.ReplicaID != rs.replicaIDOf(held[v.ID]) {
				t.Errorf("replica %d lists %s connected %v, held by %q; replica %d (%s) holds it, the dead leader was %s",
					r.n, v.Name, v.Connected, v.ReplicaID, held[v.ID].n, rs.replicaIDOf(held[v.ID]), deadID)
			}
		}
		for _, name := range orphans {
			if out, err := r.cli("sandbox", "exec", name, "--", "/busybox", "echo", "back"); err != nil || strings.TrimSpace(out) != "back" {
				t.Errorf("replica %d: exec in %s after the failover: %q, %v", r.n, name, out, err)
			}
		}
	}

	// The doomed sandbox, deleted through a survivor, then the killed
	// replica back: no replica accepts its credentials.
	rs.anyLive().mustCLI("sandbox", "delete", doomed)
	leader.start()
	for _, r := range rs.replicas {
		if _, err := rs.exchange(r.sessionAddr, ids[doomed], projected); status.Code(err) != codes.NotFound {
			t.Errorf("replica %d: exchange of the deleted sandbox's projected token: %v; want NotFound", r.n, err)
		}
		for _, helloFor := range []string{ids[doomed], ids[names[0]]} {
			if err := rs.hello(r.sessionAddr, sandkeyToken, helloFor); err == nil {
				t.Errorf("replica %d accepted a session with the deleted sandbox %s's token (Hello for %s)", r.n, doomed, helloFor)
			}
		}
	}
	if _, err := rs.exchange(rs.service.Addr(), ids[doomed], projected); status.Code(err) != codes.NotFound {
		t.Errorf("exchange of the deleted sandbox's projected token through the Service: %v; want NotFound", err)
	}

	t.Logf("%d generations checked: one jti each, as stored", rs.checkNoGenerationTwice())
}

// reRegistered returns, for each of names, the first session a live
// replica accepted for it at or after since.
func (rs *replicaSet) reRegistered(names []string, ids map[string]string, since time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for _, r := range rs.live() {
		acc := r.acceptedSince(since)
		for _, name := range names {
			if at, ok := acc[ids[name]]; ok {
				if prev, seen := out[name]; !seen || at.Before(prev) {
					out[name] = at
				}
			}
		}
	}
	return out
}

// hello opens a session at addr with bearer and says Hello for sandboxID;
// nil means the replica accepted the session.
func (rs *replicaSet) hello(addr, bearer, sandboxID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return sessiontest.Hello(ctx, "tls://"+addr, bearer, sandboxID, "replicas-deleted-token-check", session.WithTLSConfig(rs.clientTLS()))
}

// A leader paused past its lease (SIGSTOP, as a long GC pause or a
// frozen VM would) is replaced; resumed, it stops leading at once and
// commits nothing as leader: one leader, no generation with two jtis.
func TestReplicasPausedLeaderStepsDownAndCommitsNothing(t *testing.T) {
	rs := newReplicaSet(t)
	_, ids := rs.createSpread(replicaCount)
	old := rs.awaitLeader(kubeenv.Bound)
	var others []*replica
	for _, r := range rs.replicas {
		if r != old {
			others = append(others, r)
		}
	}
	old.signal(syscall.SIGSTOP)
	paused := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			old.signal(syscall.SIGCONT)
		}
	}()
	var next *replica
	rs.eventually("another replica leads while the leader is paused", 2*lease+5*time.Second, func() bool {
		for _, r := range others {
			if v, err := r.metric("sandkey_leader", ""); err == nil && v == 1 {
				next = r
				return true
			}
		}
		return false
	})
	t.Logf("replica %d leads %s after replica %d was paused", next.n, time.Since(paused).Round(time.Millisecond), old.n)
	// Let the new leader sweep a while, then wake the old one up.
	time.Sleep(2 * time.Second)
	old.signal(syscall.SIGCONT)
	resumed = true
	woke := time.Now()

	rs.eventually("the resumed replica says it does not lead", lease+5*time.Second, func() bool {
		v, err := old.metric("sandkey_leader", "")
		return err == nil && v == 0
	})
	t.Logf("replica %d stepped down %s after it resumed", old.n, time.Since(woke).Round(time.Millisecond))
	for _, e := range old.events("a leader write was fenced off: another gateway holds the lease", "stopped leader work",
		"the leader lease was not renewed before its deadline: leader work stops at once") {
		if !e.At.Before(woke) {
			t.Logf("replica %d, %s after it resumed: %s %v", old.n, e.At.Sub(woke).Round(time.Millisecond), e.Msg, e.Fields["why"])
		}
	}
	// From now on, for a while, one leader and it is the new one.
	for end := time.Now().Add(lease); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if l := rs.leaders(); len(l) != 1 || l[0] != next {
			t.Fatalf("leaders after the old one resumed: %v; want replica %d alone", replicaNumbers(l), next.n)
		}
	}
	// Leader work (sweeps, reconciles) minted nothing on it once paused.
	for _, e := range old.events("minted") {
		if reason := e.Fields["reason"]; e.At.After(paused) && (reason == "rotation" || reason == "reconcile") {
			t.Errorf("replica %d, deposed, minted sandbox %s gen %v for %v %s after it resumed", old.n, e.Sandbox, e.Fields["gen"], reason, e.At.Sub(woke).Round(time.Millisecond))
		}
	}
	rs.awaitHeld(ids)
	t.Logf("%d generations checked: one jti each, as stored", rs.checkNoGenerationTwice())
}

func replicaNumbers(rs []*replica) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.n)
	}
	return out
}
