package supervisor

import (
	"slices"
	"testing"
)

func TestWorkloadUserGetsItsHomeUnlessHomeWasSetOnPurpose(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"unset", []string{"PATH=/bin"}, []string{"PATH=/bin", "HOME=/home/app"}},
		{"empty", []string{"HOME=", "PATH=/bin"}, []string{"PATH=/bin", "HOME=/home/app"}},
		{"the runtime's home for root", []string{"HOME=/root", "PATH=/bin"}, []string{"PATH=/bin", "HOME=/home/app"}},
		{"set on purpose", []string{"HOME=/data", "PATH=/bin"}, []string{"HOME=/data", "PATH=/bin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := withHome(tc.env, "/home/app", "/root"); !slices.Equal(got, tc.want) {
				t.Errorf("withHome(%q) = %q, want %q", tc.env, got, tc.want)
			}
		})
	}
}
