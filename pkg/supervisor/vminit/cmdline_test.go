package vminit

import (
	"reflect"
	"strings"
	"testing"

	"github.com/sandkey/sandkey/pkg/guest"
)

func TestParseKernelCmdlineKeepsSandkeyParameters(t *testing.T) {
	tests := []struct {
		name string
		line string
		want map[string]string
	}{
		{"typical", "console=ttyS0 quiet panic=-1 sandkey.addr=10.0.2.15/24 sandkey.tag=auth\n",
			map[string]string{"addr": "10.0.2.15/24", "tag": "auth"}},
		{"empty line", "", map[string]string{}},
		{"no sandkey parameters", "console=ttyS0 root=/dev/vda ro", map[string]string{}},
		{"flag without value", "sandkey.debug", map[string]string{"debug": ""}},
		{"value containing =", "sandkey.opt=a=b", map[string]string{"opt": "a=b"}},
		{"quoted value with spaces", `sandkey.motd="hello  world" x=1`, map[string]string{"motd": "hello  world"}},
		{"quoted whole parameter", `"sandkey.motd=a b"`, map[string]string{"motd": "a b"}},
		{"unterminated quote runs to end", `sandkey.a="x y sandkey.b=1`, map[string]string{"a": "x y sandkey.b=1"}},
		{"later overrides earlier", "sandkey.tag=a sandkey.tag=b", map[string]string{"tag": "b"}},
		{"dash equals underscore", "sandkey.share-mount=/m", map[string]string{"share_mount": "/m"}},
		{"empty name ignored", "sandkey.=x sandkey. =y", map[string]string{}},
		{"prefix must match exactly", "sandkeyx.a=1 xsandkey.b=2 SANDKEY.c=3", map[string]string{}},
		{"init argv after -- ignored", "sandkey.a=1 -- sandkey.b=2", map[string]string{"a": "1"}},
		{"tabs and repeated spaces", "\tsandkey.a=1 \t  sandkey.b=2  ", map[string]string{"a": "1", "b": "2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseKernelCmdline(tt.line); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseKernelCmdline(%q) = %v, want %v", tt.line, got, tt.want)
			}
		})
	}
}

func TestConfigFromCmdlineMapsKeys(t *testing.T) {
	params := ParseKernelCmdline("sandkey.tag=auth sandkey.mount=/run/a sandkey.iface=enp0s2 " +
		"sandkey.addr=10.0.2.15/24 sandkey.gw=10.0.2.2 sandkey.modules=/m/virtio.ko,,/m/fuse.ko, sandkey.other=1")
	want := Config{
		ShareTag:   "auth",
		ShareMount: "/run/a",
		Modules:    []string{"/m/virtio.ko", "/m/fuse.ko"},
		Interface:  "enp0s2",
		Address:    "10.0.2.15/24",
		Gateway:    "10.0.2.2",
	}
	if got := ConfigFromCmdline(params); !reflect.DeepEqual(got, want) {
		t.Errorf("ConfigFromCmdline = %+v, want %+v", got, want)
	}
	if got := ConfigFromCmdline(nil); !reflect.DeepEqual(got, Config{}) {
		t.Errorf("ConfigFromCmdline(nil) = %+v, want zero", got)
	}
}

// The driver writes settings with guest.KernelParam and guest.VMEnv; both
// must reach the same Config here.
func TestSettingsWrittenByTheGuestContractReachConfig(t *testing.T) {
	values := map[string]string{guest.VMShareTag: "auth", guest.VMShareMount: "/run/a", guest.VMInterface: "enp0s2",
		guest.VMAddress: "10.0.2.15/24", guest.VMGateway: "10.0.2.2", guest.VMModules: "/m/virtio.ko,/m/fuse.ko"}
	want := Config{ShareTag: "auth", ShareMount: "/run/a", Modules: []string{"/m/virtio.ko", "/m/fuse.ko"},
		Interface: "enp0s2", Address: "10.0.2.15/24", Gateway: "10.0.2.2"}
	var params, environ []string
	for key, value := range values {
		params = append(params, guest.KernelParam(key, value))
		environ = append(environ, guest.VMEnv(key)+"="+value)
	}
	if got := ConfigFromCmdline(ParseKernelCmdline(strings.Join(params, " "))); !reflect.DeepEqual(got, want) {
		t.Errorf("Config from kernel parameters %q = %+v, want %+v", params, got, want)
	}
	if got := ConfigFromCmdline(EnvParams(append(environ, guest.EnvVMInit+"=on"))); !reflect.DeepEqual(got, want) {
		t.Errorf("Config from variables %q = %+v, want %+v", environ, got, want)
	}
}
