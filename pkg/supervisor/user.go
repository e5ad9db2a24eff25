package supervisor

import (
	"os"
	"strconv"
	"strings"

	"github.com/sandkey/sandkey/pkg/supervisor/workload"
)

// lookupUser resolves the workload's user against the sandbox's own
// /etc/passwd and /etc/group: the supervisor runs inside the sandbox's
// root file system, the image's. It returns nil, nothing to drop to,
// when spec is empty.
func lookupUser(spec string) (*workload.User, error) {
	if spec == "" {
		return nil, nil
	}
	u, err := workload.LookupUser(os.DirFS("/"), spec)
	if err != nil {
		return nil, configErr(ExitConfig, "workload user (--user, SANDKEY_USER, or the image's USER): %v", err)
	}
	return &u, nil
}

// userEnv gives the workload of user u its HOME, as `docker run --user`
// does: the user's home when HOME is unset or still names the
// supervisor's own home, which the container runtime set for root (a
// home the user could not use). A HOME set on purpose elsewhere is kept.
func userEnv(env []string, u *workload.User) []string {
	if u == nil || u.UID == uint32(os.Getuid()) {
		return env
	}
	own := "/"
	if me, err := workload.LookupUser(os.DirFS("/"), strconv.Itoa(os.Getuid())); err == nil {
		own = me.Home
	}
	return withHome(env, u.Home, own)
}

// withHome sets HOME to home in env when it is unset, empty or own.
func withHome(env []string, home, own string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok {
			if v != "" && v != own {
				return env
			}
			continue
		}
		out = append(out, kv)
	}
	return append(out, "HOME="+home)
}
