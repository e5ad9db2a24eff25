package workload

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// User is who a workload runs as: what the supervisor, root in its
// sandbox, drops to before it starts the workload and every exec'd
// command.
type User struct {
	UID, GID uint32
	// Groups are the supplementary groups: the primary group and every
	// group of /etc/group that lists the user by name.
	Groups []uint32
	// Home is the user's home directory from /etc/passwd, "/" without an
	// entry (as container runtimes default it).
	Home string
}

// The files LookupUser reads, relative to the root it is given.
const (
	passwdFile = "etc/passwd"
	groupFile  = "etc/group"
)

// maxIDFileLine bounds one line of /etc/passwd or /etc/group.
const maxIDFileLine = 64 << 10

// LookupUser resolves spec, in the forms an image's USER takes (name,
// uid, uid:gid, name:group, uid:group, name:gid), against the passwd
// and group files below root, as a container engine does for the image's
// user:
//
//   - a name must have a passwd entry; a numeric uid needs none (it runs
//     with gid 0 and home "/" unless an entry says otherwise);
//   - the group, when given, is a gid or a name of the group file;
//     otherwise the passwd entry's gid, or 0;
//   - the supplementary groups are the primary gid and the groups that
//     list the user's name as a member.
//
// A missing file has no entries: a scratch image without /etc runs a
// numeric user.
func LookupUser(root fs.FS, spec string) (User, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" || (hasGroup && groupPart == "") {
		return User{}, fmt.Errorf("user %q: want name, uid, uid:gid or name:group", spec)
	}
	passwd, err := readIDFile(root, passwdFile, 7)
	if err != nil {
		return User{}, fmt.Errorf("user %q: %w", spec, err)
	}
	u := User{Home: "/"}
	entry, found := findUser(passwd, userPart)
	switch uid, numErr := parseID(userPart); {
	case found:
		if u.UID, err = parseID(entry[2]); err != nil {
			return User{}, fmt.Errorf("user %q: /%s: uid of %s: %w", spec, passwdFile, entry[0], err)
		}
		if u.GID, err = parseID(entry[3]); err != nil {
			return User{}, fmt.Errorf("user %q: /%s: gid of %s: %w", spec, passwdFile, entry[0], err)
		}
		if entry[5] != "" {
			u.Home = entry[5]
		}
	case numErr == nil:
		u.UID = uid
	default:
		return User{}, fmt.Errorf("user %q: no user %s in the image's /%s", spec, userPart, passwdFile)
	}

	groups, err := readIDFile(root, groupFile, 4)
	if err != nil {
		return User{}, fmt.Errorf("user %q: %w", spec, err)
	}
	if hasGroup {
		if u.GID, err = lookupGroup(groups, groupPart); err != nil {
			return User{}, fmt.Errorf("user %q: %w", spec, err)
		}
	}
	u.Groups = []uint32{u.GID}
	if found {
		for _, g := range groups {
			if !slices.Contains(strings.Split(g[3], ","), entry[0]) {
				continue
			}
			if gid, err := parseID(g[2]); err == nil && !slices.Contains(u.Groups, gid) {
				u.Groups = append(u.Groups, gid)
			}
		}
	}
	return u, nil
}

// findUser returns the passwd entry whose name, or failing that whose
// uid, is s.
func findUser(passwd [][]string, s string) ([]string, bool) {
	for _, e := range passwd {
		if e[0] == s {
			return e, true
		}
	}
	for _, e := range passwd {
		if e[2] == s {
			return e, true
		}
	}
	return nil, false
}

// lookupGroup resolves a group name, or a gid that needs no entry.
func lookupGroup(groups [][]string, s string) (uint32, error) {
	for _, g := range groups {
		if g[0] == s {
			gid, err := parseID(g[2])
			if err != nil {
				return 0, fmt.Errorf("/%s: gid of %s: %w", groupFile, s, err)
			}
			return gid, nil
		}
	}
	if gid, err := parseID(s); err == nil {
		return gid, nil
	}
	return 0, fmt.Errorf("no group %s in the image's /%s", s, groupFile)
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return uint32(n), nil
}

// readIDFile reads the colon-separated entries of name below root, each
// with at least fields fields; comments, blank and short lines are
// skipped. A missing file has no entries.
func readIDFile(root fs.FS, name string, fields int) ([][]string, error) {
	f, err := root.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read /%s: %w", name, err)
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), maxIDFileLine)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) < fields {
			continue
		}
		out = append(out, parts)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /%s: %w", name, err)
	}
	return out, nil
}
