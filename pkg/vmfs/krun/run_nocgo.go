//go:build !cgo

package krun

// Run fails with ErrNoCgo: a binary built without cgo cannot load libkrun.
func Run(vm VM) error {
	if err := vm.Check(); err != nil {
		return err
	}
	return ErrNoCgo
}
