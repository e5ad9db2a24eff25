package gatewaycmd

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
)

var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func testSandboxes() []*adminpb.Sandbox {
	return []*adminpb.Sandbox{
		{
			Id: "0123456789abcdef0123456789abcdef", Name: "web", Driver: "process", State: "running",
			InstanceId: "a1b2c3", LatestGen: 7, WrittenGen: 7, DeliveredGen: 6,
			RotateAt:  timestamppb.New(testNow.Add(25 * time.Minute)),
			CreatedAt: timestamppb.New(testNow.Add(-3 * time.Hour)),
			UpdatedAt: timestamppb.New(testNow.Add(-90 * time.Second)),
			Connected: true, Command: []string{"sh", "-c", "echo 'hi there'"},
			Env: map[string]string{"MODE": "prod", "A": "1"},
		},
		{
			Id: "fedcba9876543210fedcba9876543210", Name: "batch-job", Driver: "docker", State: "created",
			Image: "busybox", Command: []string{"true"},
			CreatedAt: timestamppb.New(testNow.Add(-50 * time.Hour)),
			UpdatedAt: timestamppb.New(testNow.Add(-50 * time.Hour)),
		},
	}
}

func TestSandboxTableShowsStateGenerationsConnectionAndAge(t *testing.T) {
	var out bytes.Buffer
	if err := printSandboxes(&out, outputTable, testSandboxes(), testNow); err != nil {
		t.Fatal(err)
	}
	want := `NAME       ID                                DRIVER   STATE    GEN  DELIVERED  CONNECTED  ROTATES  AGE
web        0123456789abcdef0123456789abcdef  process  running  7    6          yes        in 25m   3h
batch-job  fedcba9876543210fedcba9876543210  docker   created  0    0          no         -        2d
`
	if out.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestSandboxTableSaysHowToCreateWhenEmpty(t *testing.T) {
	var out bytes.Buffer
	if err := printSandboxes(&out, outputTable, nil, testNow); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "gateway sandbox create") {
		t.Errorf("empty table says %q", out.String())
	}
}

func TestSandboxJSONHasEveryKeyWithStableNames(t *testing.T) {
	var out bytes.Buffer
	if err := printSandbox(&out, outputJSON, testSandboxes()[1], testNow); err != nil {
		t.Fatal(err)
	}
	want := `{
  "id": "fedcba9876543210fedcba9876543210",
  "name": "batch-job",
  "driver": "docker",
  "state": "created",
  "instance_id": "",
  "image": "busybox",
  "command": [
    "true"
  ],
  "env": {},
  "latest_gen": 0,
  "written_gen": 0,
  "delivered_gen": 0,
  "connected": false,
  "rotate_at": null,
  "created_at": "2026-11-25T10:00:00Z",
  "updated_at": "2026-11-25T10:00:00Z"
}
`
	if out.String() != want {
		t.Errorf("json:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestSandboxListJSONIsAnArrayEvenWhenEmpty(t *testing.T) {
	var out bytes.Buffer
	if err := printSandboxes(&out, outputJSON, nil, testNow); err != nil {
		t.Fatal(err)
	}
	if out.String() != "[]\n" {
		t.Errorf("empty list = %q, want []", out.String())
	}
	out.Reset()
	if err := printSandboxes(&out, outputJSON, testSandboxes(), testNow); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"name": "web"`, `"name": "batch-job"`, `"rotate_at": "2026-11-27T12:25:00Z"`, `"MODE": "prod"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("list json lacks %s:\n%s", want, out.String())
		}
	}
}

func TestSandboxDetailShowsEveryField(t *testing.T) {
	var out bytes.Buffer
	if err := printSandboxDetail(&out, outputTable, testSandboxes()[0], testNow); err != nil {
		t.Fatal(err)
	}
	want := `Name:       web
ID:         0123456789abcdef0123456789abcdef
Driver:     process
State:      running
Instance:   a1b2c3
Image:      -
Command:    sh -c 'echo '\''hi there'\'''
Env:        A=1
            MODE=prod
Token:      generation 7 (written 7, delivered 6)
Rotates:    2026-11-27T12:25:00Z (in 25m)
Connected:  yes
Created:    2026-11-27T09:00:00Z (3h ago)
Updated:    2026-11-27T11:58:30Z (1m ago)
`
	if out.String() != want {
		t.Errorf("detail:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestKeysTableAndJSON(t *testing.T) {
	keys := []*adminpb.SigningKey{
		{Kid: "k-new", State: "active", CreatedAt: timestamppb.New(testNow.Add(-time.Minute)), PublicKey: []byte{0xfb, 0xff}},
		{Kid: "k-next", State: "next", CreatedAt: timestamppb.New(testNow), ActivatesAt: timestamppb.New(testNow.Add(5 * time.Minute))},
		{Kid: "k-old", State: "retired", CreatedAt: timestamppb.New(testNow.Add(-72 * time.Hour)), RetiredAt: timestamppb.New(testNow.Add(-time.Hour))},
	}
	var out bytes.Buffer
	if err := printKeys(&out, outputTable, keys, testNow); err != nil {
		t.Fatal(err)
	}
	wantTable := `KID     STATE    CREATED               AGE  ACTIVATES             RETIRED
k-new   active   2026-11-27T11:59:00Z  1m   -                     -
k-next  next     2026-11-27T12:00:00Z  0s   2026-11-27T12:05:00Z  -
k-old   retired  2026-11-24T12:00:00Z  3d   -                     2026-11-27T11:00:00Z
`
	if out.String() != wantTable {
		t.Errorf("keys table:\n%s\nwant:\n%s", out.String(), wantTable)
	}
	out.Reset()
	if err := printKeys(&out, outputJSON, keys[:1], testNow); err != nil {
		t.Fatal(err)
	}
	wantJSON := `[
  {
    "kid": "k-new",
    "state": "active",
    "created_at": "2026-11-27T11:59:00Z",
    "retired_at": null,
    "activates_at": null,
    "public_key": "-_8"
  }
]
`
	if out.String() != wantJSON {
		t.Errorf("keys json:\n%s\nwant:\n%s", out.String(), wantJSON)
	}
}

func TestRotatesColumn(t *testing.T) {
	at := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(testNow.Add(d)) }
	tests := []struct {
		name string
		sb   *adminpb.Sandbox
		want string
	}{
		{"running, due later", &adminpb.Sandbox{State: "running", LatestGen: 1, RotateAt: at(90 * time.Second)}, "in 1m"},
		{"running, overdue", &adminpb.Sandbox{State: "running", LatestGen: 1, RotateAt: at(-time.Second)}, "due"},
		{"stopped sandboxes do not rotate", &adminpb.Sandbox{State: "stopped", LatestGen: 1, RotateAt: at(-time.Hour)}, "-"},
		{"never minted", &adminpb.Sandbox{State: "running", RotateAt: at(time.Hour)}, "-"},
	}
	for _, tt := range tests {
		if got := rotates(tt.sb, testNow); got != tt.want {
			t.Errorf("%s: rotates = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestShortDurationKeepsTheLargestUnit(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{59 * time.Second, "59s"},
		{time.Minute, "1m"},
		{59*time.Minute + 59*time.Second, "59m"},
		{time.Hour, "1h"},
		{47 * time.Hour, "47h"},
		{48 * time.Hour, "2d"},
	}
	for _, tt := range tests {
		if got := shortDuration(tt.d); got != tt.want {
			t.Errorf("shortDuration(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestShellJoinQuotesWhatAShellWouldSplit(t *testing.T) {
	tests := []struct {
		argv []string
		want string
	}{
		{nil, "-"},
		{[]string{"sleep", "100"}, "sleep 100"},
		{[]string{"python3", "-m", "http.server", "--bind=0.0.0.0"}, "python3 -m http.server --bind=0.0.0.0"},
		{[]string{"sh", "-c", "echo $HOME"}, "sh -c 'echo $HOME'"},
		{[]string{"echo", ""}, "echo ''"},
		{[]string{"echo", "it's"}, `echo 'it'\''s'`},
	}
	for _, tt := range tests {
		if got := shellJoin(tt.argv); got != tt.want {
			t.Errorf("shellJoin(%q) = %s, want %s", tt.argv, got, tt.want)
		}
	}
}

func TestSandboxOutputNamesTheReplicaHoldingTheSession(t *testing.T) {
	sb := testSandboxes()[0]
	sb.ReplicaId = "9f3c2a71d0e4b658"
	var out bytes.Buffer
	if err := printSandbox(&out, outputJSON, sb, testNow); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"connected": true,
  "replica_id": "9f3c2a71d0e4b658",`) {
		t.Errorf("json does not name the holding replica after connected:\n%s", out.String())
	}
	out.Reset()
	if err := printSandboxDetail(&out, outputTable, sb, testNow); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Connected:  yes\nReplica:    9f3c2a71d0e4b658\n") {
		t.Errorf("detail does not name the holding replica:\n%s", out.String())
	}
	out.Reset()
	if err := printSandboxes(&out, outputWide, []*adminpb.Sandbox{sb, testSandboxes()[1]}, testNow); err != nil {
		t.Fatal(err)
	}
	want := `NAME       ID                                DRIVER   STATE    GEN  DELIVERED  CONNECTED  ROTATES  AGE  REPLICA
web        0123456789abcdef0123456789abcdef  process  running  7    6          yes        in 25m   3h   9f3c2a71d0e4b658
batch-job  fedcba9876543210fedcba9876543210  docker   created  0    0          no         -        2d   -
`
	if out.String() != want {
		t.Errorf("wide table:\n%s\nwant:\n%s", out.String(), want)
	}
}
