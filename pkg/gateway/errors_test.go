package gateway

import (
	"errors"
	"fmt"
	"testing"

	"github.com/sandkey/sandkey/pkg/store"
)

func TestOutwardGivesStoreErrorsTheGatewaysValueAndKeepsTheMessage(t *testing.T) {
	for _, k := range storeKinds {
		in := fmt.Errorf("sandbox web: %w", k.from)
		out := outward(in)
		if !errors.Is(out, k.to) {
			t.Errorf("%v: not the gateway's %v", in, k.to)
		}
		if !errors.Is(out, k.from) {
			t.Errorf("%v: lost the store's %v", in, k.from)
		}
		if out.Error() != in.Error() {
			t.Errorf("message %q, want %q", out.Error(), in.Error())
		}
	}
	own := fmt.Errorf("sandbox name %q: %w", "-x", ErrInvalid)
	if got := outward(own); got != own {
		t.Errorf("the gateway's own error was rewrapped: %#v", got)
	}
	other := errors.New("disk full")
	if got := outward(other); got != other {
		t.Errorf("an error of no store kind was rewrapped: %#v", got)
	}
	if outward(nil) != nil {
		t.Error("nil became an error")
	}
	if errors.Is(outward(store.ErrNotFound), ErrExists) {
		t.Error("not found also reads as exists")
	}
}
