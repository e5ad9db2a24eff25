package container_test

import (
	"testing"
	"time"

	"github.com/sandkey/sandkey/pkg/driver"
)

// BenchmarkCreateToRunning measures, per engine, a sandbox's Create and
// Start until Status reports it running. Deleting it is not timed.
func BenchmarkCreateToRunning(b *testing.B) {
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			d := e.driver(b)
			for b.Loop() {
				b.StopTimer()
				spec := newSandbox(b).spec()
				b.StartTimer()
				if err := d.Create(ctxT(b), spec); err != nil {
					b.Fatal(err)
				}
				if err := d.Start(ctxT(b), spec); err != nil {
					b.Fatal(err)
				}
				for {
					st, err := d.Status(ctxT(b), spec.SandboxID)
					if err != nil {
						b.Fatal(err)
					}
					if st.State == driver.StateRunning {
						break
					}
					time.Sleep(time.Millisecond)
				}
				b.StopTimer()
				if err := d.Delete(ctxT(b), spec.SandboxID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
