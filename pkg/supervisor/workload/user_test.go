package workload

import (
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

// imageRoot is the /etc of a small image: a user with a home and two
// extra groups, one without an entry of its own beyond passwd.
var imageRoot = fstest.MapFS{
	"etc/passwd": {Data: []byte(`# comment
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:App:/home/app:/bin/sh
nohome:x:1001:1001:::/bin/sh
short:line
`)},
	"etc/group": {Data: []byte(`root:x:0:
app:x:1000:
audio:x:29:app,other
video:x:44:other,app
staff:x:50:
`)},
}

func TestLookupUserResolvesEveryFormOfAnImageUser(t *testing.T) {
	for _, tc := range []struct {
		spec string
		root fstest.MapFS
		want User
	}{
		{"app", imageRoot, User{UID: 1000, GID: 1000, Groups: []uint32{1000, 29, 44}, Home: "/home/app"}},
		{"1000", imageRoot, User{UID: 1000, GID: 1000, Groups: []uint32{1000, 29, 44}, Home: "/home/app"}},
		{"app:staff", imageRoot, User{UID: 1000, GID: 50, Groups: []uint32{50, 29, 44}, Home: "/home/app"}},
		{"app:7", imageRoot, User{UID: 1000, GID: 7, Groups: []uint32{7, 29, 44}, Home: "/home/app"}},
		{"1000:1000", imageRoot, User{UID: 1000, GID: 1000, Groups: []uint32{1000, 29, 44}, Home: "/home/app"}},
		{"root", imageRoot, User{UID: 0, GID: 0, Groups: []uint32{0}, Home: "/root"}},
		{"nohome", imageRoot, User{UID: 1001, GID: 1001, Groups: []uint32{1001}, Home: "/"}},
		{"4242", imageRoot, User{UID: 4242, GID: 0, Groups: []uint32{0}, Home: "/"}},
		{"4242:4343", imageRoot, User{UID: 4242, GID: 4343, Groups: []uint32{4343}, Home: "/"}},
		// A scratch image: no /etc at all; numbers need no files.
		{"4242:4343", fstest.MapFS{}, User{UID: 4242, GID: 4343, Groups: []uint32{4343}, Home: "/"}},
		{"4242", fstest.MapFS{}, User{UID: 4242, GID: 0, Groups: []uint32{0}, Home: "/"}},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := LookupUser(tc.root, tc.spec)
			if err != nil {
				t.Fatalf("LookupUser(%q): %v", tc.spec, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("LookupUser(%q) = %+v, want %+v", tc.spec, got, tc.want)
			}
		})
	}
}

func TestLookupUserRefusesNamesTheImageDoesNotHave(t *testing.T) {
	for _, tc := range []struct {
		spec string
		root fstest.MapFS
		want string
	}{
		{"ghost", imageRoot, "no user ghost"},
		{"app:ghosts", imageRoot, "no group ghosts"},
		{"app", fstest.MapFS{}, "no user app"},
		{"1000:staff", fstest.MapFS{}, "no group staff"},
		{"", imageRoot, "want name, uid"},
		{"app:", imageRoot, "want name, uid"},
		{"99999999999", imageRoot, "no user 99999999999"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			_, err := LookupUser(tc.root, tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"`+tc.spec+`"`) {
				t.Fatalf("LookupUser(%q) = %v; want an error naming the input and saying %q", tc.spec, err, tc.want)
			}
		})
	}
}
