//go:build !cgo

package krun

import (
	"errors"
	"testing"
)

func TestRunWithoutCgoSaysHowToGetLibkrunSupport(t *testing.T) {
	vm := VM{CPUs: 1, MemoryMiB: 256, Root: "/r", Exec: "/init", Env: []string{}}
	if err := Run(vm); !errors.Is(err, ErrNoCgo) {
		t.Fatalf("Run = %v, want ErrNoCgo", err)
	}
}
