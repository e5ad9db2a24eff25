package vminit

import (
	"strings"

	"github.com/sandkey/sandkey/pkg/guest"
)

// ParseKernelCmdline returns the sandkey.* parameters of a kernel command
// line (the contents of /proc/cmdline), keyed without the prefix:
// "sandkey.addr=10.0.2.15/24 sandkey.tag=auth" gives addr and tag. It reads
// the line as the kernel does: parameters are separated by white space,
// double quotes group a value with spaces ("sandkey.x=\"a b\""), '-' in a
// name equals '_', a later parameter overrides an earlier one, a name
// without '=' has the empty value, and "--" ends the kernel's parameters
// (what follows is init's argv). Parameters with an empty name are ignored.
func ParseKernelCmdline(s string) map[string]string {
	params := make(map[string]string)
	for _, arg := range splitCmdline(s) {
		if arg == "--" {
			break
		}
		name, value, _ := strings.Cut(arg, "=")
		name = strings.ReplaceAll(name, "-", "_")
		key, ok := strings.CutPrefix(name, guest.KernelParamPrefix)
		if !ok || key == "" {
			continue
		}
		params[key] = value
	}
	return params
}

// splitCmdline splits at white space outside double quotes and drops the
// quotes. An unterminated quote runs to the end of the line.
func splitCmdline(s string) []string {
	var (
		args    []string
		cur     strings.Builder
		inQuote bool
		inArg   bool
	)
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			inArg = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

// ConfigFromCmdline builds a Config from ParseKernelCmdline's result. The
// keys (guest.VM*): tag (ShareTag), mount (ShareMount), modules
// (comma-separated Modules), iface (Interface), addr (Address), gw
// (Gateway). Others are left to the caller.
func ConfigFromCmdline(params map[string]string) Config {
	cfg := Config{
		ShareTag:   params[guest.VMShareTag],
		ShareMount: params[guest.VMShareMount],
		Interface:  params[guest.VMInterface],
		Address:    params[guest.VMAddress],
		Gateway:    params[guest.VMGateway],
	}
	for _, m := range strings.Split(params[guest.VMModules], ",") {
		if m = strings.TrimSpace(m); m != "" {
			cfg.Modules = append(cfg.Modules, m)
		}
	}
	return cfg
}
