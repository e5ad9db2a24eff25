package gatewaycmd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Configuration comes from three places, strongest first: flags, then
// SANDKEY_* environment variables, then the YAML file named by --config.
// The three share one vocabulary: a flag --token-lifetime is the variable
// SANDKEY_TOKEN_LIFETIME and the key token-lifetime in the file, so there
// is one list of settings (the flags, each with its documented default),
// and every value goes through the flag's own parser. Unknown keys and
// values that do not parse fail at start, naming where they came from.

// maxConfigFile caps the configuration file a gateway reads.
const maxConfigFile = 1 << 20

// EnvName is the environment variable for a flag.
func EnvName(flag string) string {
	return "SANDKEY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// settingSources says where applyConfig took each setting it set: an
// environment variable or the config file.
type settingSources map[string]string

var flagMention = regexp.MustCompile(`--([a-z0-9-]+)`)

// annotate adds to err where the settings it names came from, when not
// from the command line: an operator who typed no --drivers must learn
// that SANDKEY_DRIVERS said it. Its exit code stays err's.
func (s settingSources) annotate(err error) error {
	if err == nil || len(s) == 0 {
		return err
	}
	var notes []string
	seen := map[string]bool{}
	for _, m := range flagMention.FindAllStringSubmatch(err.Error(), -1) {
		if src, ok := s[m[1]]; ok && !seen[m[1]] {
			seen[m[1]] = true
			notes = append(notes, "--"+m[1]+" came from "+src)
		}
	}
	if len(notes) == 0 {
		return err
	}
	return &annotatedError{err: err, note: strings.Join(notes, "; ")}
}

// annotatedError is an error with a note on its inputs; errors.As still
// finds what it wraps (a usage error stays one).
type annotatedError struct {
	err  error
	note string
}

func (e *annotatedError) Error() string { return e.err.Error() + " (" + e.note + ")" }
func (e *annotatedError) Unwrap() error { return e.err }

// applyConfig fills every flag the user did not set from the environment,
// then from the YAML file at path (when not empty). A setting taken from
// either counts as changed, as if given as a flag; the sources say which.
func applyConfig(fs *pflag.FlagSet, path string, skip map[string]bool) (settingSources, error) {
	fromFile, lists, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	sources := settingSources{}
	var errs []error
	for key := range fromFile {
		f := fs.Lookup(key)
		switch {
		case f == nil || skip[key]:
			hint := "settings are the flag names of `gateway serve --help`"
			if alt := strings.ToLower(strings.ReplaceAll(key, "_", "-")); alt != key && fs.Lookup(alt) != nil && !skip[alt] {
				hint = fmt.Sprintf("did you mean %q?", alt)
			}
			errs = append(errs, fmt.Errorf("config file %s: unknown setting %q (%s)", path, key, hint))
		case lists[key] && !strings.HasSuffix(f.Value.Type(), "Slice") && !strings.HasSuffix(f.Value.Type(), "Array"):
			errs = append(errs, fmt.Errorf("config file %s: %s: a list, but the setting takes one value; write %s: VALUE", path, key, key))
			delete(fromFile, key)
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || skip[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment %s=%q: %w", EnvName(f.Name), v, err))
			}
			sources[f.Name] = "the environment, " + EnvName(f.Name)
			return
		}
		if v, ok := fromFile[f.Name]; ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("config file %s: %s: %q: %w", path, f.Name, v, err))
			}
			sources[f.Name] = "the config file " + path
		}
	})
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return sources, errors.Join(errs...)
}

// readConfigFile reads a flat YAML mapping of setting names to scalars (or
// lists of scalars, for repeated flags), and which of them were lists.
func readConfigFile(path string) (settings map[string]string, lists map[string]bool, err error) {
	if path == "" {
		return nil, nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config file: %w", err)
	}
	if len(data) > maxConfigFile {
		return nil, nil, fmt.Errorf("config file %s: %d bytes exceeds the %d-byte limit", path, len(data), maxConfigFile)
	}
	var raw map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("config file %s: not a YAML mapping of settings: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	lists = map[string]bool{}
	for k, v := range raw {
		switch val := v.(type) {
		case map[string]any:
			return nil, nil, fmt.Errorf("config file %s: %s: nested mappings are not settings; write %s: VALUE", path, k, k)
		case []any:
			parts := make([]string, len(val))
			for i, p := range val {
				parts[i] = fmt.Sprint(p)
			}
			out[k] = strings.Join(parts, ",")
			lists[k] = true
		case nil:
			out[k] = ""
		default:
			out[k] = fmt.Sprint(val)
		}
	}
	return out, lists, nil
}

// unknownEnv lists the SANDKEY_* variables of the environment that are no
// setting of fs, sorted: a mistyped SANDKEY_TOKEN_LIFETIM would otherwise
// pass unseen. They are warned about, not refused: the environment is
// shared with the CLI, the tests and other tools.
func unknownEnv(fs *pflag.FlagSet) []string {
	known := map[string]bool{"SANDKEY_CONFIG": true}
	fs.VisitAll(func(f *pflag.Flag) { known[EnvName(f.Name)] = true })
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "SANDKEY_") && !known[name] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
