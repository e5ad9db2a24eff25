package guest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestBootFileRoundTripsAndRefusesBadEntries(t *testing.T) {
	b := Boot{Env: []string{"A=1", "B=x=y", "EMPTY="}, Args: []string{"--", "sh", "-c", `echo "a b"`}, StopPort: "/dev/ttyS1"}
	data, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "boot.json")
	os.WriteFile(path, data, 0o600)
	got, err := ReadBoot(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Errorf("ReadBoot = %+v, want %+v", got, b)
	}
	for _, env := range []string{"NOEQUALS", "=value", "A=b\x00c"} {
		if _, err := (Boot{Env: []string{env}}).Encode(); err == nil {
			t.Errorf("Encode accepted the environment entry %q", env)
		}
	}
	dir := t.TempDir()
	for name, content := range map[string]string{
		"unknown field": `{"env":[],"args":[],"extra":1}`,
		"bad entry":     `{"env":["NOEQUALS"]}`,
		"too large":     `{"env":["A=` + strings.Repeat("x", maxBootFile) + `"]}`,
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(path, []byte(content), 0o600)
		if _, err := ReadBoot(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: ReadBoot = %v, want an error naming the file", name, err)
		}
	}
	if _, err := ReadBoot(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadBoot of a missing file = %v, want fs.ErrNotExist", err)
	}
}

// Guest images and supervisors already built read these forms: a change
// here is a change of the contract, not a refactoring.
func TestSettingNamesKeepTheirWireForm(t *testing.T) {
	for got, want := range map[string]string{
		KernelParam(VMShareTag, "sandkey-auth"): "sandkey.tag=sandkey-auth",
		KernelParam(VMModules, "/a.ko,/b.ko"):   "sandkey.modules=/a.ko,/b.ko",
		VMEnv(VMShareTag):                       "SANDKEY_VM_TAG",
		VMEnv(VMAddress):                        "SANDKEY_VM_ADDR",
		EnvVMInit:                               "SANDKEY_VM_INIT",
		DefaultGateway:                          "unix:///run/sandkey/gw/gw.sock",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}
