package process

import (
	"os"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stat    string
		want    procStat
		wantErr bool
	}{
		{
			name: "plain command",
			stat: "4242 (sleep) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 5000000 100 18446744073709551615",
			want: procStat{State: 'S', PPID: 1, Session: 4242, StartTicks: 987654},
		},
		{
			name: "command with spaces and parentheses",
			stat: "7 (a) (b c)) Z 3 7 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 123 0 0",
			want: procStat{State: 'Z', PPID: 3, Session: 5, StartTicks: 123},
		},
		{name: "no command", stat: "7 S 1 7 7", wantErr: true},
		{name: "truncated", stat: "7 (x) S 1 7 7 0 -1", wantErr: true},
		{name: "start time not a number", stat: "7 (x) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 abc 0", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tc.stat))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parsed %+v, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseProcStat = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestObserveTellsAliveFromRecycled(t *testing.T) {
	self := os.Getpid()
	ticks := startTicks(t, self)
	if state, ppid := (process{PID: self, StartTicks: ticks}).observe(); state != alive || ppid != os.Getppid() {
		t.Errorf("this process observed %v with parent %d, want alive with parent %d", state, ppid, os.Getppid())
	}
	if state, _ := (process{PID: self, StartTicks: ticks + 1}).observe(); state != gone {
		t.Errorf("this pid with another start time observed %v, want gone", state)
	}
}
