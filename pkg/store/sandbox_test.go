package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestCreateSandboxAssignsFreshRandomIDs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)
		seen := map[string]bool{}
		for i := range 20 {
			sb := createTestSandbox(t, s, fmt.Sprintf("sb-%d", i))
			if !hexID.MatchString(sb.ID) || seen[sb.ID] {
				t.Fatalf("id %q: want 32 fresh hex digits", sb.ID)
			}
			seen[sb.ID] = true
			// A deleted sandbox's name is free again, its id is not reused.
			if err := s.DeleteSandbox(ctx, sb.ID); err != nil {
				t.Fatal(err)
			}
			again := createTestSandbox(t, s, fmt.Sprintf("sb-%d", i))
			if again.ID == sb.ID {
				t.Fatalf("id %s reused after deletion", sb.ID)
			}
		}
	})
}

func TestSandboxRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		now := testEpoch
		s := openAt(t, be.newLocation(t), Options{Now: func() time.Time { return now }})
		spec := json.RawMessage(`{"image":"alpine","env":{"A":"1"},"lifetime":"1h"}`)
		created, err := s.CreateSandbox(ctx, NewSandbox{Name: "web", Driver: "docker", Spec: spec})
		if err != nil {
			t.Fatal(err)
		}
		if created.State != SandboxCreated || !created.CreatedAt.Equal(now) || created.LatestGen != 0 {
			t.Errorf("created = %+v", created)
		}

		now = now.Add(time.Minute)
		if err := s.UpdateSandboxState(ctx, created.ID, SandboxRunning, "container-1"); err != nil {
			t.Fatal(err)
		}
		byID, err := s.GetSandbox(ctx, created.ID)
		if err != nil {
			t.Fatal(err)
		}
		byName, err := s.GetSandboxByName(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		want := created
		want.State, want.InstanceID, want.UpdatedAt = SandboxRunning, "container-1", now
		for _, got := range []Sandbox{byID, byName} {
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		}
		if string(byID.Spec) != string(spec) {
			t.Errorf("spec %s, want %s unchanged", byID.Spec, spec)
		}
	})
}

func TestCreateSandboxRejects(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		createTestSandbox(t, s, "taken")
		tests := []struct {
			name string
			n    NewSandbox
			want error
		}{
			{"taken name", NewSandbox{Name: "taken", Driver: "process"}, ErrNameTaken},
			{"empty name", NewSandbox{Name: " ", Driver: "process"}, ErrInvalid},
			{"empty driver", NewSandbox{Name: "x"}, ErrInvalid},
			{"spec not JSON", NewSandbox{Name: "x", Driver: "process", Spec: []byte("{")}, ErrInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if _, err := s.CreateSandbox(ctx, tt.n); !errors.Is(err, tt.want) {
					t.Errorf("CreateSandbox(%+v) = %v, want %v", tt.n, err, tt.want)
				}
			})
		}
	})
}

func TestListSandboxesFiltersByState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		for _, sb := range []struct {
			name  string
			state SandboxState
		}{{"c", SandboxRunning}, {"a", SandboxStopped}, {"b", SandboxRunning}, {"d", SandboxCreated}} {
			created := createTestSandbox(t, s, sb.name)
			if err := s.UpdateSandboxState(ctx, created.ID, sb.state, ""); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			states []SandboxState
			want   string
		}{
			{nil, "a b c d"},
			{[]SandboxState{SandboxRunning}, "b c"},
			{[]SandboxState{SandboxRunning, SandboxStopped}, "a b c"},
			{[]SandboxState{SandboxVanished}, ""},
		}
		for _, tt := range tests {
			list, err := s.ListSandboxes(ctx, tt.states...)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, sb := range list {
				names = append(names, sb.Name)
			}
			if got := strings.Join(names, " "); got != tt.want {
				t.Errorf("ListSandboxes(%v) = %q, want %q", tt.states, got, tt.want)
			}
		}
		if _, err := s.ListSandboxes(ctx, "paused"); !errors.Is(err, ErrInvalid) {
			t.Errorf("ListSandboxes(paused) = %v, want ErrInvalid", err)
		}
	})
}

func TestUnknownSandboxIsNotFound(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		for name, err := range map[string]error{
			"GetSandbox":         second(s.GetSandbox(ctx, "nope")),
			"GetSandboxByName":   second(s.GetSandboxByName(ctx, "nope")),
			"UpdateSandboxState": s.UpdateSandboxState(ctx, "nope", SandboxRunning, ""),
			"DeleteSandbox":      s.DeleteSandbox(ctx, "nope"),
		} {
			if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "nope") {
				t.Errorf("%s: %v, want ErrNotFound naming the input", name, err)
			}
		}
		if err := s.UpdateSandboxState(ctx, "nope", "paused", ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("UpdateSandboxState(paused) = %v, want ErrInvalid", err)
		}
	})
}

func second[T any](_ T, err error) error { return err }

func TestDeleteSandboxRevokesItsTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openTestStore(t, be)
		doomed, kept := createTestSandbox(t, s, "doomed"), createTestSandbox(t, s, "kept")
		mint := testMint(testEpoch)
		var last Generation
		for range 3 {
			gens, err := s.NextGenerations(ctx, []string{doomed.ID, kept.ID}, mint)
			if err != nil {
				t.Fatal(err)
			}
			last = gens[0]
		}
		if v, _ := s.IsAcceptable(ctx, doomed.ID, last.Gen, last.JTI); v != VerdictAccepted {
			t.Fatalf("before delete: %q", v)
		}

		if err := s.DeleteSandbox(ctx, doomed.ID); err != nil {
			t.Fatal(err)
		}
		if v, err := s.IsAcceptable(ctx, doomed.ID, last.Gen, last.JTI); err != nil || v != VerdictUnknownSandbox {
			t.Errorf("after delete: IsAcceptable = %q, %v; want %q", v, err, VerdictUnknownSandbox)
		}
		if n := queryInt(t, s.reader, "SELECT count(*) FROM generations WHERE sandbox_id = ?", doomed.ID); n != 0 {
			t.Errorf("%d generations of the deleted sandbox remain", n)
		}
		if n := queryInt(t, s.reader, "SELECT count(*) FROM generations WHERE sandbox_id = ?", kept.ID); n != 3 {
			t.Errorf("the other sandbox has %d generations, want 3", n)
		}
	})
}

func TestMarkInstanceStoppedIgnoresOtherInstances(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		s := openTestStore(t, be)
		ctx := context.Background()
		sb, err := s.CreateSandbox(ctx, NewSandbox{Name: "exits", Driver: "process"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateSandboxState(ctx, sb.ID, SandboxRunning, "second"); err != nil {
			t.Fatal(err)
		}
		if changed, err := s.MarkInstanceStopped(ctx, sb.ID, "first"); err != nil || changed {
			t.Fatalf("a late report of an earlier instance: changed %v, %v; want no change", changed, err)
		}
		if changed, err := s.MarkInstanceStopped(ctx, sb.ID, "second"); err != nil || !changed {
			t.Fatalf("the running instance's report: changed %v, %v; want a change", changed, err)
		}
		got, _ := s.GetSandbox(ctx, sb.ID)
		if got.State != SandboxStopped || got.InstanceID != "second" {
			t.Fatalf("after the report: %s / %s, want stopped / second", got.State, got.InstanceID)
		}
	})
}

func TestRecordRunKeepsTheBackendsNameOfTheCurrentRun(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := openAt(t, be.newLocation(t), Options{})
		sb := createTestSandbox(t, s, "pod")
		if sb.RunID != "" {
			t.Fatalf("a new sandbox has run %q", sb.RunID)
		}
		for _, run := range []string{"uid-1", "uid-2"} {
			if err := s.RecordRun(ctx, sb.ID, run); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetSandbox(ctx, sb.ID)
			if err != nil || got.RunID != run {
				t.Fatalf("run %q (%v), want %q", got.RunID, err, run)
			}
		}
		if err := s.RecordRun(ctx, "nope", "uid-3"); !errors.Is(err, ErrNotFound) {
			t.Errorf("run of an unknown sandbox: %v, want ErrNotFound", err)
		}
	})
}
