package kubernetes

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sandkey/sandkey/pkg/guest"
)

const testSupervisorImage = "example/supervisor:1"

func newAnyImageDriver(t *testing.T) *Driver {
	t.Helper()
	d, err := New(context.Background(), Config{Client: fake.NewClientset(), Namespace: testNS, ServiceAccount: testSA,
		Audience: testAud, Gateway: "tls://10.88.0.1:7443", SupervisorImage: testSupervisorImage, PullPolicy: corev1.PullNever})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestSupervisorImageCopiesTheSupervisorInAndRunsTheCommandUnderIt pins
// the pod of an image without a supervisor: an init container from the
// supervisor image copies it into an emptyDir, which the sandbox
// container mounts read-only and runs as `supervisor -- <command>`, the
// token volume as ever.
func TestSupervisorImageCopiesTheSupervisorInAndRunsTheCommandUnderIt(t *testing.T) {
	d := newAnyImageDriver(t)
	pod := d.podFor(testSpec("aaaa"))

	if len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("init containers %+v, want the supervisor's copy alone", pod.Spec.InitContainers)
	}
	ic := pod.Spec.InitContainers[0]
	if ic.Image != testSupervisorImage || ic.ImagePullPolicy != corev1.PullNever ||
		!slices.Equal(ic.Command, []string{"/supervisor", "--copy-to", "/run/sandkey/bin/supervisor"}) {
		t.Errorf("init container %s %s %v, want %s (Never) running /supervisor --copy-to /run/sandkey/bin/supervisor",
			ic.Image, ic.ImagePullPolicy, ic.Command, testSupervisorImage)
	}
	if len(ic.VolumeMounts) != 1 || ic.VolumeMounts[0].Name != binVolume || ic.VolumeMounts[0].MountPath != guest.SupervisorBinDir || ic.VolumeMounts[0].ReadOnly {
		t.Errorf("init container mounts %+v, want %s writable at %s", ic.VolumeMounts, binVolume, guest.SupervisorBinDir)
	}
	var bin *corev1.Volume
	for i, v := range pod.Spec.Volumes {
		if v.Name == binVolume {
			bin = &pod.Spec.Volumes[i]
		}
	}
	if bin == nil || bin.EmptyDir == nil {
		t.Fatalf("volumes %+v, want an emptyDir %s", pod.Spec.Volumes, binVolume)
	}

	c := pod.Spec.Containers[0]
	if c.Image != "example/sb:1" {
		t.Errorf("sandbox container image %s, want the sandbox's", c.Image)
	}
	if want := []string{"/run/sandkey/bin/supervisor", "--", "sleep", "60"}; !slices.Equal(c.Command, want) || len(c.Args) != 0 {
		t.Errorf("sandbox container command %v args %v, want %v and no args", c.Command, c.Args, want)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	if m := mounts[binVolume]; m.MountPath != guest.SupervisorBinDir || !m.ReadOnly {
		t.Errorf("sandbox container mounts %+v: want %s read-only at %s", c.VolumeMounts, binVolume, guest.SupervisorBinDir)
	}
	if m := mounts[tokenVolume]; m.MountPath != guest.ServiceAccountTokenDir || !m.ReadOnly {
		t.Errorf("sandbox container mounts %+v: want the token volume read-only at %s", c.VolumeMounts, guest.ServiceAccountTokenDir)
	}
}

// TestWithoutSupervisorImageThePodRunsTheImagesEntrypoint pins today's
// pod when no supervisor image is set: no init container, no command, the
// sandbox's command as the arguments of the image's /supervisor.
func TestWithoutSupervisorImageThePodRunsTheImagesEntrypoint(t *testing.T) {
	d, _ := newFakeDriver(t)
	pod := d.podFor(testSpec("aaaa"))
	c := pod.Spec.Containers[0]
	if len(pod.Spec.InitContainers) != 0 || len(c.Command) != 0 || !slices.Equal(c.Args, []string{"sleep", "60"}) || len(pod.Spec.Volumes) != 1 {
		t.Errorf("init %v, command %v, args %v, volumes %d: want none, none, [sleep 60], the token's alone",
			pod.Spec.InitContainers, c.Command, c.Args, len(pod.Spec.Volumes))
	}
}

// TestSupervisorImageRefusesASandboxWithoutCommand pins the refusal at
// create, and that its error names the flag and says to give a command.
func TestSupervisorImageRefusesASandboxWithoutCommand(t *testing.T) {
	d := newAnyImageDriver(t)
	spec := testSpec("aaaa")
	spec.Command = nil
	err := d.Create(context.Background(), spec)
	if err == nil {
		t.Fatal("Create accepted a sandbox without command")
	}
	for _, want := range []string{"--kubernetes-supervisor-image", "give the workload's command", spec.Image} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := d.StartRun(context.Background(), spec); err == nil {
		t.Error("StartRun accepted a sandbox without command")
	}
}
