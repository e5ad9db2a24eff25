package driver

import (
	"sort"
	"strings"

	"github.com/sandkey/sandkey/pkg/guest"
)

// StripReserved returns env without any SANDKEY_* variable
// (guest.EnvPrefix): only the gateway sets those, so a user cannot point a
// supervisor at another sandbox's identity or gateway.
func StripReserved(env map[string]string) map[string]string {
	out := make(map[string]string, len(env))
	for k, v := range env {
		if strings.HasPrefix(strings.ToUpper(k), guest.EnvPrefix) {
			continue
		}
		out[k] = v
	}
	return out
}

// Environ merges the user's environment (reserved names stripped) with the
// gateway's SANDKEY_* variables into KEY=VALUE form, sorted for stable
// output.
func Environ(user, sandbox map[string]string) []string {
	merged := StripReserved(user)
	for k, v := range sandbox {
		merged[k] = v
	}
	out := make([]string, 0, len(merged))
	for k, v := range merged {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
