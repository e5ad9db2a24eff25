package gatewaycmd

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sandkey/sandkey/pkg/admin/adminpb"
)

// Output formats (-o). Tables are for people and may change; JSON is for
// programs: its keys are fixed, every key is always present (null or
// empty when unset), and times are RFC 3339 in UTC.
const (
	outputTable = "table"
	outputJSON  = "json"
	// outputWide is the table with more columns where there are more:
	// sandbox lists add the replica holding the session.
	outputWide = "wide"
)

func checkOutput(format string) error {
	switch format {
	case outputTable, outputJSON, outputWide:
		return nil
	}
	return Usagef("unknown output format %q: use -o table, -o wide or -o json", format)
}

// sandboxJSON is a sandbox in -o json.
type sandboxJSON struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Driver       string            `json:"driver"`
	State        string            `json:"state"`
	InstanceID   string            `json:"instance_id"`
	RunID        string            `json:"run_id,omitempty"`
	Image        string            `json:"image"`
	Command      []string          `json:"command"`
	Env          map[string]string `json:"env"`
	LatestGen    uint64            `json:"latest_gen"`
	WrittenGen   uint64            `json:"written_gen"`
	DeliveredGen uint64            `json:"delivered_gen"`
	Connected    bool              `json:"connected"`
	ReplicaID    string            `json:"replica_id,omitempty"` // the gateway replica holding the session; absent when none does
	RotateAt     *time.Time        `json:"rotate_at"`
	CreatedAt    *time.Time        `json:"created_at"`
	UpdatedAt    *time.Time        `json:"updated_at"`
}

func sandboxToJSON(sb *adminpb.Sandbox) sandboxJSON {
	v := sandboxJSON{
		ID: sb.GetId(), Name: sb.GetName(), Driver: sb.GetDriver(), State: sb.GetState(),
		InstanceID: sb.GetInstanceId(), RunID: sb.GetRunId(), Image: sb.GetImage(),
		Command: sb.GetCommand(), Env: sb.GetEnv(),
		LatestGen: sb.GetLatestGen(), WrittenGen: sb.GetWrittenGen(), DeliveredGen: sb.GetDeliveredGen(),
		Connected: sb.GetConnected(), ReplicaID: sb.GetReplicaId(),
		RotateAt:  utcTime(sb.GetRotateAt().AsTime(), sb.GetRotateAt() != nil),
		CreatedAt: utcTime(sb.GetCreatedAt().AsTime(), sb.GetCreatedAt() != nil),
		UpdatedAt: utcTime(sb.GetUpdatedAt().AsTime(), sb.GetUpdatedAt() != nil),
	}
	if v.Command == nil {
		v.Command = []string{}
	}
	if v.Env == nil {
		v.Env = map[string]string{}
	}
	return v
}

// keyJSON is a signing key in -o json.
type keyJSON struct {
	KID       string     `json:"kid"`
	State     string     `json:"state"`
	CreatedAt *time.Time `json:"created_at"`
	RetiredAt *time.Time `json:"retired_at"`
	// ActivatesAt is when a next key becomes active; null otherwise.
	ActivatesAt *time.Time `json:"activates_at"`
	// PublicKey is the raw Ed25519 key in unpadded base64url, as the
	// JWKS's "x" carries it.
	PublicKey string `json:"public_key"`
}

func keyToJSON(k *adminpb.SigningKey) keyJSON {
	return keyJSON{
		KID: k.GetKid(), State: k.GetState(),
		CreatedAt:   utcTime(k.GetCreatedAt().AsTime(), k.GetCreatedAt() != nil),
		RetiredAt:   utcTime(k.GetRetiredAt().AsTime(), k.GetRetiredAt() != nil),
		ActivatesAt: utcTime(k.GetActivatesAt().AsTime(), k.GetActivatesAt() != nil),
		PublicKey:   base64.RawURLEncoding.EncodeToString(k.GetPublicKey()),
	}
}

func utcTime(t time.Time, set bool) *time.Time {
	if !set {
		return nil
	}
	t = t.UTC()
	return &t
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printSandboxes writes sandboxes as a table (wide: with the replica
// holding each session), or as a JSON array.
func printSandboxes(w io.Writer, format string, sbs []*adminpb.Sandbox, now time.Time) error {
	if format == outputJSON {
		out := make([]sandboxJSON, 0, len(sbs))
		for _, sb := range sbs {
			out = append(out, sandboxToJSON(sb))
		}
		return writeJSON(w, out)
	}
	if len(sbs) == 0 {
		_, err := fmt.Fprintln(w, "No sandboxes. Create one with: gateway sandbox create NAME -- CMD ARGS...")
		return err
	}
	wide := format == outputWide
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "NAME\tID\tDRIVER\tSTATE\tGEN\tDELIVERED\tCONNECTED\tROTATES\tAGE")
	if wide {
		fmt.Fprint(tw, "\tREPLICA")
	}
	fmt.Fprintln(tw)
	for _, sb := range sbs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s",
			sb.GetName(), sb.GetId(), sb.GetDriver(), sb.GetState(), sb.GetLatestGen(), sb.GetDeliveredGen(),
			yesNo(sb.GetConnected()), rotates(sb, now), age(sb.GetCreatedAt().AsTime(), now, sb.GetCreatedAt() != nil))
		if wide {
			fmt.Fprintf(tw, "\t%s", orDash(sb.GetReplicaId()))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// printSandbox writes one sandbox as a one-row table, or a JSON object.
func printSandbox(w io.Writer, format string, sb *adminpb.Sandbox, now time.Time) error {
	if format == outputJSON {
		return writeJSON(w, sandboxToJSON(sb))
	}
	return printSandboxes(w, format, []*adminpb.Sandbox{sb}, now)
}

// printSandboxDetail writes everything about one sandbox, one field a
// line, or a JSON object.
func printSandboxDetail(w io.Writer, format string, sb *adminpb.Sandbox, now time.Time) error {
	if format == outputJSON {
		return writeJSON(w, sandboxToJSON(sb))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	field := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	field("Name", sb.GetName())
	field("ID", sb.GetId())
	field("Driver", sb.GetDriver())
	field("State", sb.GetState())
	field("Instance", orDash(sb.GetInstanceId()))
	field("Image", orDash(sb.GetImage()))
	field("Command", shellJoin(sb.GetCommand()))
	env := sortedEnv(sb.GetEnv())
	if len(env) == 0 {
		field("Env", "-")
	}
	for i, kv := range env {
		if i == 0 {
			field("Env", kv)
		} else {
			fmt.Fprintf(tw, "\t%s\n", kv)
		}
	}
	field("Token", fmt.Sprintf("generation %d (written %d, delivered %d)",
		sb.GetLatestGen(), sb.GetWrittenGen(), sb.GetDeliveredGen()))
	if sb.GetRotateAt() != nil && sb.GetLatestGen() > 0 {
		field("Rotates", fmt.Sprintf("%s (%s)", stamp(sb.GetRotateAt().AsTime()), rotates(sb, now)))
	} else {
		field("Rotates", "-")
	}
	field("Connected", yesNo(sb.GetConnected()))
	if sb.GetReplicaId() != "" {
		field("Replica", sb.GetReplicaId())
	}
	if sb.GetCreatedAt() != nil {
		field("Created", fmt.Sprintf("%s (%s ago)", stamp(sb.GetCreatedAt().AsTime()), age(sb.GetCreatedAt().AsTime(), now, true)))
	}
	if sb.GetUpdatedAt() != nil {
		field("Updated", fmt.Sprintf("%s (%s ago)", stamp(sb.GetUpdatedAt().AsTime()), age(sb.GetUpdatedAt().AsTime(), now, true)))
	}
	return tw.Flush()
}

// printKeys writes signing keys as a table, or a JSON array.
func printKeys(w io.Writer, format string, keys []*adminpb.SigningKey, now time.Time) error {
	if format == outputJSON {
		out := make([]keyJSON, 0, len(keys))
		for _, k := range keys {
			out = append(out, keyToJSON(k))
		}
		return writeJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tSTATE\tCREATED\tAGE\tACTIVATES\tRETIRED")
	for _, k := range keys {
		created, activates, retired := "-", "-", "-"
		if k.GetCreatedAt() != nil {
			created = stamp(k.GetCreatedAt().AsTime())
		}
		if k.GetActivatesAt() != nil {
			activates = stamp(k.GetActivatesAt().AsTime())
		}
		if k.GetRetiredAt() != nil {
			retired = stamp(k.GetRetiredAt().AsTime())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.GetKid(), k.GetState(), created,
			age(k.GetCreatedAt().AsTime(), now, k.GetCreatedAt() != nil), activates, retired)
	}
	return tw.Flush()
}

// printResult writes the outcome of an operation that returns no
// sandbox: a sentence for people, or v as a JSON object.
func printResult(w io.Writer, format, sentence string, v any) error {
	if format == outputJSON {
		return writeJSON(w, v)
	}
	_, err := fmt.Fprintln(w, sentence)
	return err
}

// rotates says when a running sandbox's token rotates next.
func rotates(sb *adminpb.Sandbox, now time.Time) string {
	if sb.GetState() != "running" || sb.GetRotateAt() == nil || sb.GetLatestGen() == 0 {
		return "-"
	}
	d := sb.GetRotateAt().AsTime().Sub(now)
	if d <= 0 {
		return "due"
	}
	return "in " + shortDuration(d)
}

// age is how long before now t was, or "-" when unset.
func age(t, now time.Time, set bool) string {
	if !set {
		return "-"
	}
	return shortDuration(now.Sub(t))
}

// shortDuration rounds d down to its largest unit: 45s, 12m, 5h, 3d.
func shortDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return fmt.Sprintf("%dd", d/(24*time.Hour))
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortedEnv(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// shellJoin writes argv the way a POSIX shell would read it back.
func shellJoin(argv []string) string {
	if len(argv) == 0 {
		return "-"
	}
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_@%+=:,./-", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
