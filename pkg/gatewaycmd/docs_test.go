package gatewaycmd

import (
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sandkey/sandkey/pkg/guest"
	"github.com/sandkey/sandkey/pkg/supervisor"
)

// The operator's documents, relative to this package.
const operatingDoc = "../../docs/operating.md"

var operatorDocs = []string{operatingDoc, "../../README.md", "../../images/README.md"}

// documentedFlags is every flag of the gateway's commands and of the
// supervisor, by the command that has it.
func documentedFlags(t *testing.T) map[string]*pflag.FlagSet {
	t.Helper()
	sets := map[string]*pflag.FlagSet{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !c.Hidden {
			sets[c.CommandPath()] = c.LocalFlags()
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(NewRoot(io.Discard, io.Discard))
	sup, err := supervisor.NewFlags(&supervisor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sets["supervisor"] = sup
	return sets
}

// A flag's help states its default: pflag prints "(default X)" for any
// but a zero value; a flag whose default is empty, 0 or none says so in
// its usage (a bool's false needs no words).
func TestEveryFlagStatesItsDefaultInItsHelp(t *testing.T) {
	for cmd, fs := range documentedFlags(t) {
		fs.VisitAll(func(f *pflag.Flag) {
			if f.Name == "help" || f.Value.Type() == "bool" {
				return
			}
			if !slices.Contains([]string{"", "0", "0s", "[]"}, f.DefValue) {
				return
			}
			if !strings.Contains(f.Usage, "default") && !strings.Contains(f.Usage, "empty") {
				t.Errorf("%s --%s: the help does not say what it defaults to (usage %q)", cmd, f.Name, f.Usage)
			}
		})
	}
}

// Every flag of every command is in docs/operating.md, as `--name`.
func TestEveryFlagIsInTheOperatingDoc(t *testing.T) {
	doc := readDoc(t, operatingDoc)
	for cmd, fs := range documentedFlags(t) {
		fs.VisitAll(func(f *pflag.Flag) {
			if f.Name == "help" || f.Hidden {
				return
			}
			if !regexp.MustCompile("`--" + regexp.QuoteMeta(f.Name) + "[` =]").MatchString(doc) {
				t.Errorf("%s --%s is not in %s", cmd, f.Name, operatingDoc)
			}
		})
	}
}

// What the documents name (`--flag`, SANDKEY_VARIABLE) exists: a renamed
// flag cannot leave its old name in them.
func TestTheDocsNameOnlyFlagsAndVariablesThatExist(t *testing.T) {
	flags := map[string]bool{"help": true}
	vars := map[string]bool{
		guest.EnvToken: true, guest.EnvGatewayCA: true, // the drivers' to the supervisor
		"SANDKEY_ENGINE": true, "SANDKEY_BASE_TAG": true, "SANDKEY_GATEWAY_TAG": true, // images/build.sh
		"SANDKEY_KUBE_BIN": true, // the tests' Kubernetes binaries
	}
	for cmd, fs := range documentedFlags(t) {
		fs.VisitAll(func(f *pflag.Flag) {
			flags[f.Name] = true
			if f.Shorthand != "" {
				flags[f.Shorthand] = true
			}
			switch {
			case cmd == "gateway serve" || cmd == "gateway":
				vars[EnvName(f.Name)] = true
			case cmd == "supervisor" && f.Name != "copy-to":
				vars[EnvName(f.Name)] = true
			}
		})
	}
	varRef := regexp.MustCompile(`SANDKEY_[A-Z0-9_]*[A-Z0-9]`)
	codeSpan := regexp.MustCompile("`[^`\n]*`")
	flagRef := regexp.MustCompile(`(?:^|[ ` + "`" + `])--?([a-z][a-z0-9-]*)`)
	for _, path := range operatorDocs {
		doc := readDoc(t, path)
		for _, m := range codeSpan.FindAllString(doc, -1) {
			// Spans of other programs' command lines.
			if !strings.HasPrefix(m, "`-") && !strings.HasPrefix(m, "`gateway ") && !strings.HasPrefix(m, "`supervisor ") &&
				!strings.HasPrefix(m, "`bin/") && !strings.HasPrefix(m, "`/supervisor ") {
				continue
			}
			for _, ref := range flagRef.FindAllStringSubmatch(m, -1) {
				name := ref[1]
				if len(name) == 1 {
					// -it, -o: every letter a shorthand
					for _, c := range name {
						if !flags[string(c)] {
							t.Errorf("%s: %s names a flag -%c that no command has", path, m, c)
						}
					}
					continue
				}
				if !flags[name] && !(strings.HasPrefix(m, "`-") && allShorthands(name, flags)) {
					t.Errorf("%s: %s names a flag --%s that no command has", path, m, name)
				}
			}
		}
		for _, v := range varRef.FindAllString(doc, -1) {
			if !vars[v] {
				t.Errorf("%s names %s, which nothing reads", path, v)
			}
		}
	}
}

func allShorthands(s string, flags map[string]bool) bool {
	for _, c := range s {
		if !flags[string(c)] {
			return false
		}
	}
	return true
}

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
